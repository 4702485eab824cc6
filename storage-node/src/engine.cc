#include "dynamo/node/engine.h"

namespace dynamo::node {

void WriteBatch::Put(Space space, std::string key, std::string value) {
  bytes_ += key.size() + value.size();
  ops_.push_back(Op{space, std::move(key), std::move(value)});
}

void WriteBatch::Delete(Space space, std::string key) {
  bytes_ += key.size();
  ops_.push_back(Op{space, std::move(key), std::nullopt});
}

void WriteBatch::Append(WriteBatch&& other) {
  bytes_ += other.bytes_;
  if (ops_.empty()) {
    ops_ = std::move(other.ops_);
  } else {
    for (Op& op : other.ops_) ops_.push_back(std::move(op));
  }
  other.ops_.clear();
  other.bytes_ = 0;
}

Result<std::optional<std::string>> Engine::GetCached(Space, std::string_view) {
  return Status::Busy("this engine has no non-blocking read");
}

Status Engine::WriteNoStall(const WriteBatch&) {
  return Status::Busy("this engine has no non-blocking write");
}

}  // namespace dynamo::node
