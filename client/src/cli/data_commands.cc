#include "data_commands.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <sstream>

#include "json.h"

namespace dynamo::cli {
namespace {

constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

// Well-formed UTF-8 (RFC 3629): no overlong forms, surrogates or code
// points past U+10FFFF, which strict JSON parsers refuse.
bool ValidUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t n = 0;
    uint32_t cp = 0, min = 0;
    if ((c >> 5) == 6) {
      n = 2, cp = c & 0x1f, min = 0x80;
    } else if ((c >> 4) == 14) {
      n = 3, cp = c & 0x0f, min = 0x800;
    } else if ((c >> 3) == 30) {
      n = 4, cp = c & 0x07, min = 0x10000;
    } else {
      return false;
    }
    if (i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k) {
      const unsigned char b = static_cast<unsigned char>(s[i + k]);
      if ((b >> 6) != 2) return false;
      cp = (cp << 6) | (b & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    i += n;
  }
  return true;
}

// The value `put` reads from standard input: at most `max` bytes (one more
// is an error, read before anything larger is held), and a read error is
// one, not the end of the value.
Result<std::string> ReadValue(std::FILE* in, size_t max) {
  std::string value;
  char buf[64 << 10];
  while (true) {
    const size_t n = std::fread(buf, 1, sizeof(buf), in);
    if (value.size() + n > max) {
      return Status::InvalidArgument("the value on standard input exceeds value_bytes_max (" +
                                     std::to_string(max) + " bytes)");
    }
    value.append(buf, n);
    if (n < sizeof(buf)) break;
  }
  if (std::ferror(in)) {
    return Status::IOError(std::string("cannot read the value from standard input: ") +
                           std::strerror(errno));
  }
  return value;
}

}  // namespace

int Fail(const Status& s, bool json) {
  if (json) {
    Json j;
    j.BeginObject()
        .Key("error").String(StatusCodeName(s.code()))
        .Key("message").String(s.message())
        .Key("in_doubt").Bool(s.in_doubt())
        .EndObject();
    std::cout << j.str() << "\n";
  }
  std::cerr << "dynamoctl: " << s.ToString() << "\n";
  return 1;
}

namespace {

void ReceiptJson(Json& j, const Receipt& r) {
  j.Key("receipt").BeginObject().Key("acks").BeginArray();
  for (const Receipt::Ack& a : r.acks) {
    j.BeginObject().Key("node").String(a.node).Key("role").String(a.role);
    if (!a.hint.empty()) j.Key("for").String(a.hint);
    j.EndObject();
  }
  j.EndArray()
      .Key("hints").Uint(r.hints)
      .Key("read_repairs").Uint(r.read_repairs)
      .Key("version_vector").String(r.version_vector)
      .Key("epoch").Uint(r.epoch)
      .EndObject();
}

std::string ReceiptText(const Receipt& r) {
  std::string out;
  for (const Receipt::Ack& a : r.acks) {
    if (!out.empty()) out += ", ";
    out += a.node + " (" + a.role + (a.hint.empty() ? "" : " for " + a.hint) + ")";
  }
  return out;
}

}  // namespace

std::string Base64Encode(std::string_view bytes) {
  std::string out;
  uint32_t buf = 0;
  int bits = 0;
  for (unsigned char c : bytes) {
    buf = (buf << 8) | c;
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out += kAlphabet[(buf >> bits) & 63];
    }
  }
  if (bits > 0) out += kAlphabet[(buf << (6 - bits)) & 63];
  while (out.size() % 4) out += '=';
  return out;
}

Result<std::string> Base64Decode(std::string_view text) {
  const Status bad = Status::InvalidArgument("context is not base64 (as get and put print it)");
  const size_t data = std::min(text.find('='), text.size());
  if (text.size() % 4 != 0 || text.size() - data > 2 ||
      text.find_first_not_of('=', data) != std::string_view::npos) {
    return bad;
  }
  std::string out;
  uint32_t buf = 0;
  int bits = 0;
  for (char c : text.substr(0, data)) {
    const char* p = std::strchr(kAlphabet, c);
    if (p == nullptr || c == '\0') return bad;
    buf = (buf << 6) | static_cast<uint32_t>(p - kAlphabet);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((buf >> bits) & 0xff);
    }
  }
  if (bits >= 6 || (buf & ((1u << bits) - 1)) != 0) return bad;  // a lone char, or stray bits
  return out;
}

int RunDataCommand(const std::vector<std::string>& seeds, uint64_t timeout_ms, const DataCommand& cmd) {
  ClientOptions options;
  options.seeds = seeds;
  options.timeout_ms = timeout_ms;
  if (cmd.r > 0) options.r = cmd.r;
  if (cmd.w > 0) options.w = cmd.w;
  Result<std::unique_ptr<Client>> opened = Client::Open(options);
  if (!opened.ok()) return Fail(opened.status(), cmd.json);
  Client& client = **opened;

  if (cmd.name == "get") {
    Receipt receipt;
    ReadOptions ro;
    ro.receipt = &receipt;
    Result<GetResult> r = client.Get(cmd.key, ro);
    if (!r.ok()) return Fail(r.status(), cmd.json);
    if (cmd.json) {
      bool text = true;
      for (const std::string& v : r->values) text &= ValidUtf8(v);
      Json j;
      j.BeginObject().Key("found").Bool(r->found).Key(text ? "values" : "values_base64").BeginArray();
      for (const std::string& v : r->values) j.String(text ? v : Base64Encode(v));
      j.EndArray().Key("context").String(Base64Encode(r->context));
      ReceiptJson(j, receipt);
      j.EndObject();
      std::cout << j.str() << "\n";
    } else if (!r->found) {
      std::cout << "not found\ncontext: " << Base64Encode(r->context) << "\n";
    } else {
      for (size_t i = 0; i < r->values.size(); ++i) {
        std::cout << (r->values.size() > 1 ? "sibling " + std::to_string(i + 1) + ": " : "value: ")
                  << r->values[i] << "\n";
      }
      std::cout << "context: " << Base64Encode(r->context) << "\n"
                << "answered by: " << ReceiptText(receipt) << "\n";
    }
    return r->found ? 0 : 2;
  }

  if (cmd.name == "put" || cmd.name == "delete") {
    WriteOptions wo;
    Receipt receipt;
    wo.receipt = &receipt;
    if (cmd.unsynced) wo.durable = false;
    if (!cmd.context_b64.empty()) {
      Result<std::string> ctx = Base64Decode(cmd.context_b64);
      if (!ctx.ok()) return Fail(ctx.status(), cmd.json);
      wo.context = *ctx;
    }
    Result<std::string> r = Status::Internal("unset");
    if (cmd.name == "put") {
      std::string value;
      if (cmd.value) {
        value = *cmd.value;
      } else {
        Result<std::string> read = ReadValue(stdin, client.options().value_bytes_max);
        if (!read.ok()) return Fail(read.status(), cmd.json);
        value = std::move(*read);
      }
      r = client.Put(cmd.key, value, wo);
    } else {
      r = client.Delete(cmd.key, wo);
    }
    if (!r.ok()) {
      if (!receipt.acks.empty()) std::cerr << "acknowledged by: " << ReceiptText(receipt) << "\n";
      return Fail(r.status(), cmd.json);
    }
    if (cmd.json) {
      Json j;
      j.BeginObject().Key("context").String(Base64Encode(*r));
      ReceiptJson(j, receipt);
      j.EndObject();
      std::cout << j.str() << "\n";
    } else {
      std::cout << (cmd.name == "put" ? "stored" : "deleted") << "; acknowledged by: " << ReceiptText(receipt)
                << (receipt.hints ? " (" + std::to_string(receipt.hints) + " as hints)" : "") << "\n"
                << "context: " << Base64Encode(*r) << "\n";
    }
    return 0;
  }

  if (cmd.name == "where") {
    std::vector<Placement> places = client.Where(cmd.key);
    if (cmd.json) {
      Json j;
      j.BeginArray();
      for (const Placement& p : places) {
        j.BeginObject()
            .Key("id").String(p.id)
            .Key("address").String(p.address)
            .Key("state").String(p.state)
            .Key("role").String(p.role)
            .EndObject();
      }
      j.EndArray();
      std::cout << j.str() << "\n";
    } else {
      for (const Placement& p : places) {
        std::cout << p.role << "\t" << p.id << "\t" << p.address << "\t" << p.state << "\n";
      }
    }
    return 0;
  }

  if (cmd.name == "inspect") {
    Result<std::vector<ReplicaVersions>> inspected = client.Inspect(cmd.key);
    if (!inspected.ok()) return Fail(inspected.status(), cmd.json);
    const std::vector<ReplicaVersions>& replicas = *inspected;
    if (cmd.json) {
      Json j;
      j.BeginArray();
      for (const ReplicaVersions& rv : replicas) {
        j.BeginObject().Key("node").String(rv.node);
        if (!rv.error.empty()) j.Key("error").String(rv.error);
        j.Key("versions").BeginArray();
        for (const auto& v : rv.versions) {
          const bool text = ValidUtf8(v.value);
          j.BeginObject()
              .Key("dot")
              .String(v.dot)
              .Key(text ? "value" : "value_base64")
              .String(text ? v.value : Base64Encode(v.value))
              .Key("tombstone")
              .Bool(v.tombstone)
              .Key("lww")
              .Bool(v.lww)
              .Key("timestamp_ms")
              .Uint(v.timestamp_ms)
              .Key("context")
              .String(v.context)
              .EndObject();
        }
        j.EndArray().EndObject();
      }
      j.EndArray();
      std::cout << j.str() << "\n";
    } else {
      for (const ReplicaVersions& rv : replicas) {
        std::cout << rv.node << ":";
        if (!rv.error.empty()) {
          std::cout << " error: " << rv.error << "\n";
          continue;
        }
        if (rv.versions.empty()) std::cout << " (nothing stored)";
        std::cout << "\n";
        for (const auto& v : rv.versions) {
          std::cout << "  " << v.dot << " " << (v.tombstone ? "(deleted)" : v.value)
                    << " written against " << v.context << "\n";
        }
      }
    }
    const bool any_answered =
        std::any_of(replicas.begin(), replicas.end(),
                    [](const ReplicaVersions& rv) { return rv.error.empty(); });
    if (!any_answered) std::cerr << "dynamoctl: no replica answered\n";
    return any_answered ? 0 : 1;
  }
  return Fail(Status::InvalidArgument("unknown command " + cmd.name), cmd.json);
}

}  // namespace dynamo::cli
