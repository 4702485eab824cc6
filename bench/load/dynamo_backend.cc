// dynamo-bench's dynamo backend: the SDK's asynchronous calls. The driver
// runs on the SDK's I/O loop, where they are started and answered.
#include <optional>
#include <vector>

#include "dynamo/client.h"
#include "load/backend.h"

namespace dynamo::bench {
namespace {

class DynamoBackend : public Backend {
 public:
  explicit DynamoBackend(DynamoBackendOptions o) : o_(std::move(o)) {}
  std::string Name() const override {
    if (o_.durable_writes) return o_.lww ? "dynamo (lww)" : "dynamo";
    return o_.lww ? "dynamo (lww, unsynced)" : "dynamo (unsynced)";
  }

  Status Open(net::EventLoop&, size_t) override {
    ClientOptions co;
    co.seeds = o_.seeds;
    co.r = o_.r;
    co.w = o_.w;
    co.timeout_ms = o_.timeout_ms;
    co.mode = o_.lww ? Mode::kLww : Mode::kCausal;
    co.durable_writes = o_.durable_writes;
    co.coordinator =
        o_.fastest_coordinator ? Coordinator::kFastestReplica : Coordinator::kClientRanked;
    Result<std::unique_ptr<Client>> c = Client::Open(std::move(co));
    if (!c.ok()) return c.status();
    client_ = std::move(*c);
    contexts_.resize(o_.keys);  // before the client's thread uses it
    return Status::OK();
  }

  net::EventLoop* OwnLoop() override { return &client_->io_loop(); }

  void Read(size_t, const Key& key, OpDone done) override {
    client_->GetAsync(
        key.name, {},
        [this, index = key.index, done = std::move(done)](Result<GetResult> r) mutable {
          OpOutcome out;
          if (r.ok()) {
            out.values = r->values.size();
            // A write that finished while this read was out left a newer
            // context than the read's: keep it, unless the read found
            // siblings, which only a context covering them all resolves.
            std::optional<std::string>& context = ContextOf(index);
            if (r->found && (!context || r->values.size() > 1)) context = std::move(r->context);
          } else {
            out.status = r.status();
          }
          done(std::move(out));
        });
  }

  void Write(size_t slot, const Key& key, std::string_view value, OpDone done) override {
    const std::optional<std::string>& context = ContextOf(key.index);
    if (!context && !o_.lww) {
      // The first causal write of a key this process has not seen reads its
      // context first: a blind write would stand beside what an earlier run
      // stored. LWW writes read nothing.
      Read(slot, key, [this, slot, key, value = std::string(value), done = std::move(done)](OpOutcome r) mutable {
        if (!r.status.ok()) {
          done(std::move(r));
          return;
        }
        std::optional<std::string>& context = ContextOf(key.index);
        if (!context) context.emplace();  // not found: an empty context is right
        Write(slot, key, value, std::move(done));
      });
      return;
    }
    WriteOptions wo;
    if (context) wo.context = *context;
    client_->PutAsync(
        key.name, std::string(value), std::move(wo),
        [this, index = key.index, done = std::move(done)](Result<std::string> r) mutable {
          OpOutcome out;
          if (r.ok()) {
            ContextOf(index) = std::move(*r);
          } else {
            // The write may have been applied (in doubt): a write on the old
            // context would stand beside it as a sibling, and so would every
            // later one. The next write of the key reads first.
            ContextOf(index).reset();
            out.status = r.status();
          }
          done(std::move(out));
        });
  }

  void Close() override {
    if (!client_) return;
    // Closed while still reachable: a read-first write whose read finishes
    // meanwhile finds the client and fails, rather than a null pointer.
    client_->Close();
    client_.reset();
  }

 private:
  DynamoBackendOptions o_;
  std::unique_ptr<Client> client_;
  // The context of the last read or write of key i (none before the first),
  // grown to the highest key used; the SDK's I/O thread only.
  std::optional<std::string>& ContextOf(uint64_t i) {
    if (i >= contexts_.size()) contexts_.resize(i + 1);
    return contexts_[i];
  }
  std::vector<std::optional<std::string>> contexts_;
};

}  // namespace

std::unique_ptr<Backend> MakeDynamoBackend(DynamoBackendOptions options) {
  return std::make_unique<DynamoBackend>(std::move(options));
}

}  // namespace dynamo::bench
