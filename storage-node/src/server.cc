#include "server.h"

#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <uv.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include "dynamo/node/rocksdb_engine.h"

namespace dynamo::node {
namespace {

constexpr uint64_t kTickMs = 50;
constexpr uint64_t kDiskCheckMs = 1000;
constexpr uint64_t kConnectTimeoutMs = 1000;

}  // namespace

NodeServer::NodeServer(NodeConfig config, std::unique_ptr<Engine> engine, NodeState state)
    : config_(std::move(config)), engine_(std::move(engine)) {
  std::random_device rd;
  uint64_t seed = (uint64_t{rd()} << 32) ^ rd();
  core_ = std::make_unique<NodeCore>(config_.node, std::move(state), seed,
                                     [](LogLevel level, const std::string& msg) {
                                       switch (level) {
                                         case LogLevel::kDebug: spdlog::debug(msg); break;
                                         case LogLevel::kInfo: spdlog::info(msg); break;
                                         case LogLevel::kWarn: spdlog::warn(msg); break;
                                         case LogLevel::kError: spdlog::error(msg); break;
                                       }
                                     });
  core_->SetCounterSource([this](EngineCounters& out) {
    engine_->AppendCounters(out);
    if (listener_) {
      out.emplace_back("connections_open", listener_->connections());
      out.emplace_back("connections_refused", listener_->refused());
      out.emplace_back("connections_evicted", listener_->evicted());
      out.emplace_back("connection_buffer_bytes", listener_->buffer_bytes());
      out.emplace_back("connection_replies_queued_bytes", listener_->queued_bytes());
      out.emplace_back("connection_reads_held_back", listener_->held_back());
    }
    if (!worker_) return;
    const StorageWorkerStats w = worker_->stats();
    out.emplace_back("log_syncs", w.syncs);
    out.emplace_back("log_syncs_spaced", w.spaced);
    out.emplace_back("log_sync_spacing_us", w.spacing_us);
    out.emplace_back("disk_reads", w.reads);
  });
  SyncPacerOptions pacing;
  pacing.floor = std::chrono::microseconds(config_.sync_spacing_us);
  pacing.percent = static_cast<uint32_t>(config_.sync_spacing_percent);
  worker_ = std::make_unique<StorageWorker>(engine_.get(), &loop_, pacing);
  net::ConnectionOptions copts;
  copts.limits = config_.node.limits;
  copts.idle_timeout_ms = net::kPoolIdleTimeoutMs;
  peers_ = std::make_unique<net::ConnectionPool>(loop_, copts, kConnectTimeoutMs);
}

NodeServer::~NodeServer() {
  // Handles first, while the loop still runs their close callbacks.
  timer_.reset();
  listener_.reset();
  peers_.reset();
  for (void*& s : signals_) {
    if (s != nullptr) {
      uv_close(static_cast<uv_handle_t*>(s), [](uv_handle_t* h) { delete reinterpret_cast<uv_signal_t*>(h); });
      s = nullptr;
    }
  }
  if (worker_) worker_->Stop();
}

Now NodeServer::Clock() const {
  using namespace std::chrono;
  return Now{static_cast<uint64_t>(duration_cast<milliseconds>(steady_clock::now().time_since_epoch()).count()),
             static_cast<uint64_t>(duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count())};
}

namespace {

// Descriptors beyond the client and peer connections: RocksDB's table files,
// its logs, the node's outgoing connections and the loop's own.
constexpr size_t kDescriptorsBesideConnections = kRocksDbOpenFilesMax + 256;

// Raises the soft open-file limit to the hard one (a default soft limit of
// 1,024 would run out before node.max_connections does) and warns when even
// the hard limit is short of what the configuration may use.
void RaiseFileLimit(size_t needed) {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
  if (rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &rl) != 0) (void)::getrlimit(RLIMIT_NOFILE, &rl);
  }
  if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < needed) {
    spdlog::warn(
        "open-file limit {} is below the {} that node.max_connections and RocksDB may use; "
        "raise it (ulimit -n) or lower node.max_connections",
        static_cast<uint64_t>(rl.rlim_cur), needed);
  }
}

}  // namespace

Result<int> NodeServer::Run() {
  RaiseFileLimit(config_.max_connections + kDescriptorsBesideConnections);
  net::ListenerOptions lopts;
  lopts.connections_max = config_.max_connections;
  lopts.replies_queued_bytes_max = config_.replies_queued_bytes_max;
  lopts.connection.limits = config_.node.limits;
  lopts.connection.idle_timeout_ms = config_.idle_timeout_ms;
  Result<std::unique_ptr<net::Listener>> listener = net::Listener::Listen(
      loop_, config_.listen, lopts,
      [this](const std::shared_ptr<net::Connection>& conn, proto::Message msg) {
        conns_[conn->id()] = conn;
        core_->OnRequest(Clock(), conn->id(), std::move(msg));
        Pump();
      });
  if (!listener.ok()) return listener.status();
  listener_ = std::move(*listener);
  spdlog::info("node {} listening on {} (engine {}, data in {})", config_.node.id,
               config_.listen.ToString(), engine_->name(), config_.data_dir);

  for (int i = 0; i < 2; ++i) {
    auto* sig = new uv_signal_t;
    uv_signal_init(loop_.uv(), sig);
    sig->data = this;
    uv_signal_start(
        sig,
        [](uv_signal_t* h, int signum) {
          auto* self = static_cast<NodeServer*>(h->data);
          if (self->shutting_down_) {
            spdlog::warn("second signal: stopping without waiting");
            self->shutdown_deadline_ms_ = 0;
            return;
          }
          self->StartShutdown(0, signum == SIGTERM ? "SIGTERM" : "SIGINT");
        },
        i == 0 ? SIGTERM : SIGINT);
    signals_[i] = sig;
  }

  timer_ = std::make_unique<net::Timer>(loop_);
  timer_->Start(kTickMs, kTickMs, [this] { Tick(); });
  CheckDisk(Clock());
  core_->Start(Clock());
  Pump();
  loop_.Run();
  return exit_code_;
}

void NodeServer::Pump() {
  while (true) {
    std::vector<Action> actions = core_->TakeActions();
    if (actions.empty()) return;
    for (Action& action : actions) {
      if (auto* reply = std::get_if<ReplyAction>(&action)) {
        auto it = conns_.find(reply->conn);
        if (it == conns_.end()) continue;
        if (auto conn = it->second.lock()) {
          conn->Reply(reply->request_id, std::move(reply->body));
        } else {
          conns_.erase(it);
        }
      } else if (auto* call = std::get_if<CallAction>(&action)) {
        const uint64_t token = call->token;
        if (finished_) continue;
        peers_->Call(call->address, std::move(call->body), call->timeout_ms,
                     [this, token](net::CallOutcome r) {
                       core_->OnCallDone(Clock(), token, std::move(r.message));
                       Pump();
                     });
      } else if (auto* st = std::get_if<StorageAction>(&action)) {
        const uint64_t token = st->token;
        worker_->Execute(std::move(st->op), [this, token](StorageResult r) {
          core_->OnStorageDone(Clock(), token, std::move(r));
          Pump();
        });
      } else if (auto* exit = std::get_if<ExitAction>(&action)) {
        StartShutdown(exit->code, exit->reason);
      }
    }
  }
}

void NodeServer::Tick() {
  const Now now = Clock();
  if (!finished_) {
    if (now.mono_ms >= next_disk_check_ms_) CheckDisk(now);
    core_->OnTick(now);
    Pump();
  }
  // Replies still queued are sent before the connections close: a write
  // applied and synced whose answer was cut would reach its client in doubt.
  if (shutting_down_ && !finished_ &&
      ((core_->Idle() && !listener_->replies_unsent()) || now.mono_ms >= shutdown_deadline_ms_)) {
    FinishShutdown();
  }
  if (conns_.size() > 4 * config_.max_connections) {
    std::erase_if(conns_, [](const auto& kv) { return kv.second.expired(); });
  }
}

void NodeServer::CheckDisk(Now now) {
  next_disk_check_ms_ = now.mono_ms + kDiskCheckMs;
  if (config_.engine == "memory") return;
  struct statvfs fs {};
  if (::statvfs(config_.data_dir.c_str(), &fs) != 0) {
    if (!disk_check_failed_) {
      spdlog::warn("cannot measure the free space of {}: {}", config_.data_dir,
                   std::strerror(errno));
    }
    disk_check_failed_ = true;
    return;
  }
  disk_check_failed_ = false;
  core_->OnDiskSpace(now, static_cast<uint64_t>(fs.f_bavail) * fs.f_frsize);
}

void NodeServer::StartShutdown(int code, const std::string& why) {
  if (shutting_down_) {
    // A stop asked for (status 0) that then meets a reason to fail, corrupt
    // data say, ends with that status, so the data directory is marked.
    if (exit_code_ == 0 && code != 0) {
      exit_code_ = code;
      spdlog::error("stopping with exit status {} ({})", code, why);
    }
    return;
  }
  shutting_down_ = true;
  exit_code_ = code;
  if (code == 0) {
    spdlog::info("stopping ({}): no new connections, finishing requests in flight", why);
  } else {
    spdlog::error(
        "stopping with exit status {} ({}): no new connections, finishing requests in flight", code,
        why);
  }
  shutdown_deadline_ms_ = Clock().mono_ms + config_.shutdown_grace_ms;
  core_->BeginShutdown(Clock());
  Pump();
  if (listener_) listener_->StopAccepting();
}

void NodeServer::FinishShutdown() {
  finished_ = true;
  if (!core_->Idle()) spdlog::warn("shutdown grace period over with requests still in flight");
  if (listener_->replies_unsent()) {
    spdlog::warn("shutdown grace period over with replies its clients have not read");
  }
  listener_->CloseConnections(Status::Aborted("node stopping"));
  peers_->CloseAll(Status::Aborted("node stopping"));
  worker_->Stop();
  Status s = engine_->Sync();
  if (!s.ok()) {
    spdlog::error("final sync failed: {}", s.ToString());
    if (exit_code_ == 0) exit_code_ = 1;
  }
  spdlog::info("stopped");
  timer_->Stop();
  loop_.Stop();
}

}  // namespace dynamo::node
