// dynamo-bench's dynamo backend: the SDK's asynchronous calls. The driver
// runs on the SDK's I/O loop, where they are started and answered.
#include <unordered_map>

#include "dynamo/client.h"
#include "load/backend.h"

namespace dynamo::bench {
namespace {

class DynamoBackend : public Backend {
 public:
  explicit DynamoBackend(DynamoBackendOptions o) : o_(std::move(o)) {}
  std::string Name() const override { return o_.lww ? "dynamo (lww)" : "dynamo"; }

  Status Open(net::EventLoop&, size_t) override {
    ClientOptions co;
    co.seeds = o_.seeds;
    co.r = o_.r;
    co.w = o_.w;
    co.timeout_ms = o_.timeout_ms;
    co.mode = o_.lww ? Mode::kLww : Mode::kCausal;
    Result<std::unique_ptr<Client>> c = Client::Open(std::move(co));
    if (!c.ok()) return c.status();
    client_ = std::move(*c);
    return Status::OK();
  }

  net::EventLoop* OwnLoop() override { return &client_->io_loop(); }

  void Read(size_t, const std::string& key, OpDone done) override {
    client_->GetAsync(key, {}, [this, key, done = std::move(done)](Result<GetResult> r) mutable {
      OpOutcome out;
      if (r.ok()) {
        out.values = r->values.size();
        // A write that finished while this read was out left a newer
        // context than the read's: keep it.
        if (r->found) contexts_.try_emplace(key, std::move(r->context));
      } else {
        out.status = r.status();
      }
      done(std::move(out));
    });
  }

  void Write(size_t slot, const std::string& key, std::string_view value, OpDone done) override {
    auto it = contexts_.find(key);
    if (it == contexts_.end()) {
      // The first write of a key this process has not seen reads its context
      // first: a blind write would stand beside what an earlier run stored.
      Read(slot, key, [this, slot, key, value = std::string(value), done = std::move(done)](OpOutcome r) mutable {
        if (!r.status.ok()) {
          done(std::move(r));
          return;
        }
        contexts_.try_emplace(key);  // not found: an empty context is right
        Write(slot, key, value, std::move(done));
      });
      return;
    }
    WriteOptions wo;
    wo.context = it->second;
    client_->PutAsync(key, std::string(value), std::move(wo),
                      [this, key, done = std::move(done)](Result<std::string> r) mutable {
                        OpOutcome out;
                        if (r.ok()) {
                          contexts_[key] = std::move(*r);
                        } else {
                          out.status = r.status();
                        }
                        done(std::move(out));
                      });
  }

  void Close() override { client_.reset(); }

 private:
  DynamoBackendOptions o_;
  std::unique_ptr<Client> client_;
  std::unordered_map<std::string, std::string> contexts_;  // the SDK's I/O thread only
};

}  // namespace

std::unique_ptr<Backend> MakeDynamoBackend(DynamoBackendOptions options) {
  return std::make_unique<DynamoBackend>(std::move(options));
}

}  // namespace dynamo::bench
