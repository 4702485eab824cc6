// dynamo-bench: load against dynamo, Redis or etcd, measured the same way.
// See bench/README.md for the flags and docs/performance.md for figures.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <thread>

#include "load/backend.h"
#include "load/driver.h"

namespace {

using namespace dynamo;
using namespace dynamo::bench;

int Fail(std::string_view msg) {
  std::cerr << "dynamo-bench: " << msg << "\n";
  return 2;
}

Status WritePlot(const RunReport& report, const std::string& png) {
  const std::string script = PlotScript(report, png);
  if (script.empty()) return Status::InvalidArgument("no successful operation to plot");
  const std::string path = png + ".gnuplot";
  {
    std::ofstream f(path);
    f << script;
    if (!f) return Status::IOError("cannot write " + path);
  }
  const std::string cmd = "gnuplot '" + path + "'";
  if (std::system(cmd.c_str()) != 0) return Status::IOError("gnuplot failed on " + path + " (is gnuplot installed?)");
  std::remove(path.c_str());
  return Status::OK();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"dynamo-bench: YCSB-style load against dynamo, Redis or etcd"};
  std::string backend_name = "dynamo", workload = "A", distribution = "uniform", mode = "causal",
              coordinator = "ranked", plot;
  std::vector<std::string> seeds, addresses;
  DriverOptions o;
  int r = 2, w = 2;
  uint64_t timeout_ms = 1000;
  bool json = false, no_load = false, quiet = false, unsynced = false;
  app.add_option("--backend", backend_name, "dynamo, redis or etcd")
      ->check(CLI::IsMember({"dynamo", "redis", "etcd"}))
      ->capture_default_str();
  app.add_option("--seed", seeds, "dynamo: HOST:PORT of a node (repeatable)");
  app.add_option("--address", addresses, "redis, etcd: HOST:PORT of a server (repeatable; connections spread)");
  app.add_option("--workload", workload, "A 50/50 read/update, B 95/5, C read-only, W write-only")
      ->capture_default_str();
  app.add_option("--distribution", distribution, "key popularity: uniform or zipfian")->capture_default_str();
  app.add_option("--keys", o.keys, "key space")->capture_default_str();
  app.add_option("--key-prefix", o.key_prefix,
                 "keys are this prefix and a 10-digit number (runs with different prefixes use "
                 "different keys)")
      ->capture_default_str();
  app.add_option("--value-size", o.value_size, "bytes per written value")->capture_default_str();
  app.add_flag("--distinct-values", o.distinct_values,
               "each write's value a different slice of 1 MiB of random letters, so the store "
               "cannot compress values against each other (default: every write the same value)");
  app.add_option("--concurrency", o.concurrency, "operations in flight (closed loop) or most in flight (open)")
      ->capture_default_str();
  app.add_option("--duration", o.duration_s, "seconds of the measured phase")->capture_default_str();
  app.add_option("--ops", o.ops, "operations of the measured phase instead of a duration");
  app.add_option("--rate", o.rate, "open loop: operations started per second (latency from intended start)");
  app.add_option("--warmup", o.warmup_s, "seconds of unmeasured load before measuring")->capture_default_str();
  app.add_flag("--no-load", no_load, "skip writing every key once before the run");
  app.add_option("--random-seed", o.seed, "seed of the operation sequence")->capture_default_str();
  app.add_option("--r", r, "dynamo: replies a read waits for")
      ->check(CLI::Range(1, 255))
      ->capture_default_str();
  app.add_option("--w", w, "dynamo: acknowledgements a write waits for")
      ->check(CLI::Range(1, 255))
      ->capture_default_str();
  app.add_option("--mode", mode, "dynamo: causal or lww")->check(CLI::IsMember({"causal", "lww"}))->capture_default_str();
  app.add_flag("--unsynced", unsynced,
               "dynamo: acknowledge writes without a synced copy (durable_writes off)");
  app.add_option(
         "--coordinator", coordinator,
         "dynamo, causal: ranked (the client's first-ranked replica coordinates, so its "
         "writes share log syncs) or fastest (the replica that answered the last read fastest)")
      ->check(CLI::IsMember({"ranked", "fastest"}))
      ->capture_default_str();
  app.add_option("--timeout-ms", timeout_ms, "deadline of each operation")
      ->check(CLI::Range(uint64_t{1}, uint64_t{3'600'000}))
      ->capture_default_str();
  app.add_flag("--json", json, "print the report as one JSON object on the last line");
  app.add_option("--plot", plot, "write a latency-percentile plot to this PNG (needs gnuplot)");
  app.add_flag("--quiet", quiet, "no progress line");
  std::string measure_marker;
  app.add_option(
      "--measure-marker", measure_marker,
      "create this file as the measured phase starts (for probes that should watch it only)");
  CLI11_PARSE(app, argc, argv);

  Result<Workload> wl = ParseWorkload(workload);
  if (!wl.ok()) return Fail(wl.status().message());
  Result<KeyDistribution> dist = ParseKeyDistribution(distribution);
  if (!dist.ok()) return Fail(dist.status().message());
  o.workload = *wl;
  o.distribution = *dist;
  o.load = !no_load;
  o.drain_ms = timeout_ms + 2000;
  if (Status st = ValidateDriverOptions(o); !st.ok()) return Fail(st.message());
  if (!measure_marker.empty()) {
    o.on_measure = [measure_marker] {
      if (!std::ofstream(measure_marker).good()) {
        std::cerr << "dynamo-bench: cannot create the marker " << measure_marker << "\n";
      }
    };
  }
  if (!quiet && ::isatty(STDERR_FILENO)) {
    o.progress = [](const std::string& line) { std::fprintf(stderr, "\r%s\x1b[K", line.c_str()); };
  }

  std::unique_ptr<Backend> backend;
  if (backend_name == "dynamo") {
    if (seeds.empty()) return Fail("--backend dynamo needs --seed HOST:PORT");
    backend = MakeDynamoBackend(
        {seeds, r, w, mode == "lww", timeout_ms, !unsynced, coordinator == "fastest", o.keys});
  } else if (backend_name == "redis") {
    if (addresses.empty()) return Fail("--backend redis needs --address HOST:PORT");
    backend = MakeRedisBackend(addresses, timeout_ms);
  } else {
    if (addresses.empty()) return Fail("--backend etcd needs --address HOST:PORT");
    backend = MakeEtcdBackend(addresses, timeout_ms);
  }

  net::EventLoop loop;
  std::thread loop_thread([&] { loop.Run(); });
  auto stop = [&] {
    loop.Stop();
    loop_thread.join();
  };
  if (Status st = backend->Open(loop, o.concurrency); !st.ok()) {
    backend->Close();
    stop();
    return Fail("cannot open " + backend_name + ": " + st.ToString());
  }
  net::EventLoop* own = backend->OwnLoop();
  Result<RunReport> report = RunLoad(own != nullptr ? *own : loop, *backend, o);
  if (o.progress) std::fprintf(stderr, "\n");
  backend->Close();
  stop();
  if (!report.ok()) return Fail(report.status().ToString());
  report->backend = backend->Name();
  std::cout << ReportText(*report);
  if (!plot.empty()) {
    if (Status st = WritePlot(*report, plot); !st.ok()) {
      std::cerr << "dynamo-bench: plot: " << st.ToString() << "\n";
    } else {
      std::cout << "plot written to " << plot << "\n";
    }
  }
  if (json) std::cout << ReportJson(*report) << std::endl;
  return 0;
}
