#include "dynamo/node/keys.h"

namespace dynamo::node {
namespace {

void AppendU32(std::string* out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out->push_back(static_cast<char>(v >> shift));
}

uint32_t LoadU32(std::string_view p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

}  // namespace

std::string DataKey(PartitionId partition, std::string_view key) {
  std::string out;
  out.reserve(4 + key.size());
  AppendU32(&out, partition);
  out.append(key);
  return out;
}

std::string PartitionPrefix(PartitionId partition) { return DataKey(partition, {}); }

Result<DataKeyParts> ParseDataKey(std::string_view stored) {
  if (stored.size() < 4) return Status::Corruption("data key shorter than its partition prefix");
  return DataKeyParts{LoadU32(stored), stored.substr(4)};
}

std::string HintOwnerPrefix(std::string_view owner) {
  DYNAMO_CHECK(owner.size() <= 255);
  std::string out;
  out.push_back(static_cast<char>(owner.size()));
  out.append(owner);
  return out;
}

std::string HintKey(std::string_view owner, PartitionId partition, std::string_view key) {
  std::string out = HintOwnerPrefix(owner);
  AppendU32(&out, partition);
  out.append(key);
  return out;
}

Result<HintKeyParts> ParseHintKey(std::string_view stored) {
  if (stored.empty()) return Status::Corruption("empty hint key");
  size_t len = static_cast<uint8_t>(stored[0]);
  if (stored.size() < 1 + len + 4) return Status::Corruption("hint key too short");
  return HintKeyParts{stored.substr(1, len), LoadU32(stored.substr(1 + len)), stored.substr(5 + len)};
}

std::string EncodeSwitchSync(const SwitchSync& sync) {
  std::string out;
  for (const auto& [partition, nodes] : sync) {
    DYNAMO_CHECK(nodes.size() <= 0xff);
    AppendU32(&out, partition);
    out.push_back(static_cast<char>(nodes.size()));
    for (const NodeId& n : nodes) out += HintOwnerPrefix(n);
  }
  return out;
}

Result<SwitchSync> DecodeSwitchSync(std::string_view bytes) {
  SwitchSync out;
  while (!bytes.empty()) {
    if (bytes.size() < 5) return Status::Corruption("switch sync record too short");
    std::set<NodeId>& nodes = out[LoadU32(bytes)];
    size_t count = static_cast<uint8_t>(bytes[4]);
    bytes.remove_prefix(5);
    for (; count > 0; --count) {
      const size_t len = bytes.empty() ? 0 : static_cast<uint8_t>(bytes[0]);
      if (bytes.size() < 1 + len) return Status::Corruption("switch sync node id too short");
      nodes.emplace(bytes.substr(1, len));
      bytes.remove_prefix(1 + len);
    }
  }
  return out;
}

std::string PrefixEnd(std::string_view prefix) {
  std::string end(prefix);
  while (!end.empty() && static_cast<uint8_t>(end.back()) == 0xff) end.pop_back();
  if (!end.empty()) end.back() = static_cast<char>(static_cast<uint8_t>(end.back()) + 1);
  return end;
}

std::string QualifiedKey(uint8_t space, std::string_view key) {
  std::string s(1, static_cast<char>(space));
  s.append(key);
  return s;
}

std::string EncodeU64(uint64_t v) {
  std::string out(8, '\0');
  for (int i = 7; i >= 0; --i, v >>= 8) out[i] = static_cast<char>(v & 0xff);
  return out;
}

Result<uint64_t> DecodeU64(std::string_view bytes) {
  if (bytes.size() != 8) return Status::Corruption("expected 8 bytes");
  uint64_t v = 0;
  for (char c : bytes) v = (v << 8) | static_cast<uint8_t>(c);
  return v;
}

}  // namespace dynamo::node
