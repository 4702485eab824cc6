#include "dynamo/msgpack_io.h"

#include <algorithm>
#include <cstring>
#include <string>

namespace dynamo {
namespace {

constexpr uint32_t kDepthCeiling = 64;

uint64_t LoadBig(const char* p, size_t n) {
  switch (n) {
    case 8: {
      uint64_t v;
      std::memcpy(&v, p, sizeof v);
      return __builtin_bswap64(v);
    }
    case 4: {
      uint32_t v;
      std::memcpy(&v, p, sizeof v);
      return __builtin_bswap32(v);
    }
    case 2: {
      uint16_t v;
      std::memcpy(&v, p, sizeof v);
      return __builtin_bswap16(v);
    }
    default: {
      uint64_t v = 0;
      for (size_t i = 0; i < n; ++i) v = (v << 8) | static_cast<uint8_t>(p[i]);
      return v;
    }
  }
}

}  // namespace

void MsgpackWriter::Sized(uint8_t tag16, uint32_t n) {
  char buf[5];
  size_t len;
  if (n <= UINT16_MAX) {
    buf[0] = static_cast<char>(tag16);
    buf[1] = static_cast<char>(n >> 8);
    buf[2] = static_cast<char>(n);
    len = 3;
  } else {
    buf[0] = static_cast<char>(tag16 + 1);
    for (int i = 0; i < 4; ++i) buf[1 + i] = static_cast<char>(n >> (24 - 8 * i));
    len = 5;
  }
  out_->append(buf, len);
}

void MsgpackWriter::BigUint(uint64_t v) {
  const int width = v <= UINT8_MAX ? 1 : v <= UINT16_MAX ? 2 : v <= UINT32_MAX ? 4 : 8;
  char buf[1 + 8];
  buf[0] = static_cast<char>(width == 1 ? 0xcc : width == 2 ? 0xcd : width == 4 ? 0xce : 0xcf);
  const uint64_t big = __builtin_bswap64(v << (64 - 8 * width));
  std::memcpy(buf + 1, &big, sizeof big);
  out_->append(buf, 1 + static_cast<size_t>(width));
}

MsgpackReader::MsgpackReader(std::string_view data, const MsgpackLimits& limits)
    : data_(data), limits_(limits) {
  limits_.depth_max = std::min(limits_.depth_max, kDepthCeiling);
}

Status MsgpackReader::Fail(std::string_view what) const {
  std::string msg = "msgpack: ";
  msg += what;
  msg += " at offset ";
  msg += std::to_string(pos_);
  return Status::ProtocolError(msg);
}

Status MsgpackReader::Truncated(std::string_view what) const {
  return Fail(std::string("truncated ") + std::string(what));
}

Status MsgpackReader::PushContainer(uint64_t items) {
  if (items == 0) return Status::OK();
  if (items > limits_.items_max) {
    return Fail("container of " + std::to_string(items) + " items over the limit of " +
                std::to_string(limits_.items_max));
  }
  if (items > remaining()) return Fail("container claims more items than bytes left");
  if (depth_ + 1 > limits_.depth_max) {
    return Fail("nesting deeper than " + std::to_string(limits_.depth_max));
  }
  open_[depth_++] = items;
  return Status::OK();
}

Status MsgpackReader::ReadArray(uint32_t* count, uint32_t max) {
  DYNAMO_RETURN_IF_ERROR(EnterValue());
  uint8_t tag = static_cast<uint8_t>(data_[pos_]);
  uint64_t n;
  if ((tag & 0xf0) == 0x90) {
    n = tag & 0x0f;
    pos_ += 1;
  } else if (tag == 0xdc || tag == 0xdd) {
    size_t w = tag == 0xdc ? 2 : 4;
    DYNAMO_RETURN_IF_ERROR(Need(1 + w, "array header"));
    n = LoadBig(data_.data() + pos_ + 1, w);
    pos_ += 1 + w;
  } else {
    return Fail("expected array");
  }
  if (n > max) {
    return Fail("array of " + std::to_string(n) + " items over the limit of " +
                std::to_string(max));
  }
  DYNAMO_RETURN_IF_ERROR(PushContainer(n));
  *count = static_cast<uint32_t>(n);
  return Status::OK();
}

Status MsgpackReader::ReadUintSlow(uint64_t* value) {
  DYNAMO_RETURN_IF_ERROR(EnterValue());
  uint8_t tag = static_cast<uint8_t>(data_[pos_]);
  if (tag <= 0x7f) {
    *value = tag;
    pos_ += 1;
    return Status::OK();
  }
  size_t w;
  bool is_signed = false;
  switch (tag) {
    case 0xcc: w = 1; break;
    case 0xcd: w = 2; break;
    case 0xce: w = 4; break;
    case 0xcf: w = 8; break;
    case 0xd0: w = 1; is_signed = true; break;
    case 0xd1: w = 2; is_signed = true; break;
    case 0xd2: w = 4; is_signed = true; break;
    case 0xd3: w = 8; is_signed = true; break;
    default: return Fail("expected unsigned integer");
  }
  DYNAMO_RETURN_IF_ERROR(Need(1 + w, "integer"));
  uint64_t v = LoadBig(data_.data() + pos_ + 1, w);
  if (is_signed && (v >> (8 * w - 1)) != 0) return Fail("expected unsigned integer, got negative");
  pos_ += 1 + w;
  *value = v;
  return Status::OK();
}

Status MsgpackReader::ReadUintMax(uint64_t* value, uint64_t max) {
  size_t at = pos_;
  DYNAMO_RETURN_IF_ERROR(ReadUint(value));
  if (*value > max) {
    pos_ = at;
    return Fail("integer " + std::to_string(*value) + " over the limit of " + std::to_string(max));
  }
  return Status::OK();
}

Status MsgpackReader::ReadBool(bool* value) {
  DYNAMO_RETURN_IF_ERROR(EnterValue());
  uint8_t tag = static_cast<uint8_t>(data_[pos_]);
  if (tag != 0xc2 && tag != 0xc3) return Fail("expected bool");
  *value = tag == 0xc3;
  pos_ += 1;
  return Status::OK();
}

bool MsgpackReader::TryNil() {
  if (remaining() == 0 || static_cast<uint8_t>(data_[pos_]) != 0xc0) return false;
  Status s = EnterValue();
  DYNAMO_CHECK(s.ok());
  pos_ += 1;
  return true;
}

Status MsgpackReader::ReadBytes(bool bin, std::string_view* value, uint32_t max) {
  DYNAMO_RETURN_IF_ERROR(EnterValue());
  uint8_t tag = static_cast<uint8_t>(data_[pos_]);
  size_t w;
  uint64_t n;
  if (!bin && (tag & 0xe0) == 0xa0) {
    w = 0;
    n = tag & 0x1f;
  } else if (!bin && tag >= 0xd9 && tag <= 0xdb) {
    w = size_t{1} << (tag - 0xd9);
    DYNAMO_RETURN_IF_ERROR(Need(1 + w, "str header"));
    n = LoadBig(data_.data() + pos_ + 1, w);
  } else if (bin && tag >= 0xc4 && tag <= 0xc6) {
    w = size_t{1} << (tag - 0xc4);
    DYNAMO_RETURN_IF_ERROR(Need(1 + w, "bin header"));
    n = LoadBig(data_.data() + pos_ + 1, w);
  } else {
    return Fail(bin ? "expected bin" : "expected str");
  }
  uint64_t limit = std::min<uint64_t>(max, limits_.bytes_max);
  if (n > limit) {
    return Fail(std::string(bin ? "bin" : "str") + " of " + std::to_string(n) +
                " bytes over the limit of " + std::to_string(limit));
  }
  DYNAMO_RETURN_IF_ERROR(Need(1 + w + n, bin ? "bin" : "str"));
  *value = data_.substr(pos_ + 1 + w, n);
  pos_ += 1 + w + n;
  return Status::OK();
}

Status MsgpackReader::ReadStr(std::string_view* value, uint32_t max) {
  return ReadBytes(false, value, max);
}

Status MsgpackReader::ReadBin(std::string_view* value, uint32_t max) {
  return ReadBytes(true, value, max);
}

Status MsgpackReader::Skip() { return SkipN(1); }

Status MsgpackReader::SkipN(uint32_t count) {
  uint64_t pending = count;
  while (pending > 0) {
    --pending;
    DYNAMO_RETURN_IF_ERROR(EnterValue());
    uint8_t tag = static_cast<uint8_t>(data_[pos_]);
    uint64_t skip = 0;    // payload bytes after the header
    uint64_t items = 0;   // nested values to skip
    size_t header = 1;
    if (tag <= 0x7f || tag >= 0xe0 || tag == 0xc0 || tag == 0xc2 || tag == 0xc3) {
    } else if ((tag & 0xf0) == 0x80) {
      items = uint64_t{tag & 0x0fu} * 2;
    } else if ((tag & 0xf0) == 0x90) {
      items = tag & 0x0f;
    } else if ((tag & 0xe0) == 0xa0) {
      skip = tag & 0x1f;
    } else {
      switch (tag) {
        case 0xc4: case 0xd9: header = 2; break;
        case 0xc5: case 0xda: header = 3; break;
        case 0xc6: case 0xdb: header = 5; break;
        case 0xc7: header = 3; break;  // ext8: len, type
        case 0xc8: header = 4; break;
        case 0xc9: header = 6; break;
        case 0xca: skip = 4; break;
        case 0xcb: skip = 8; break;
        case 0xcc: case 0xd0: skip = 1; break;
        case 0xcd: case 0xd1: skip = 2; break;
        case 0xce: case 0xd2: skip = 4; break;
        case 0xcf: case 0xd3: skip = 8; break;
        case 0xd4: skip = 2; break;
        case 0xd5: skip = 3; break;
        case 0xd6: skip = 5; break;
        case 0xd7: skip = 9; break;
        case 0xd8: skip = 17; break;
        case 0xdc: case 0xde: header = 3; break;
        case 0xdd: case 0xdf: header = 5; break;
        default: return Fail("invalid type byte");
      }
      if (header > 1) {
        DYNAMO_RETURN_IF_ERROR(Need(header, "header"));
        const char* p = data_.data() + pos_ + 1;
        switch (tag) {
          case 0xc4: case 0xd9: case 0xc5: case 0xda: case 0xc6: case 0xdb:
            skip = LoadBig(p, header - 1);
            if (skip > limits_.bytes_max) return Fail("str or bin over the byte limit");
            break;
          case 0xc7: case 0xc8: case 0xc9:
            skip = LoadBig(p, header - 2);
            if (skip > limits_.bytes_max) return Fail("ext over the byte limit");
            break;
          case 0xdc: case 0xdd: items = LoadBig(p, header - 1); break;
          case 0xde: case 0xdf: items = LoadBig(p, header - 1) * 2; break;
        }
      }
    }
    DYNAMO_RETURN_IF_ERROR(Need(header + skip, "value"));
    pos_ += header + skip;
    DYNAMO_RETURN_IF_ERROR(PushContainer(items));
    pending += items;
  }
  return Status::OK();
}

Status MsgpackReader::ExpectEnd() const {
  if (pos_ != data_.size()) return Fail("trailing bytes");
  return Status::OK();
}

}  // namespace dynamo
