#include "load/report.h"

#include <cmath>
#include <cstdio>
#include <sstream>

namespace dynamo::bench {

void OpStats::RecordError(const std::string& kind, std::string_view message, uint64_t n) {
  if (n == 0) return;
  errors += n;
  errors_by_kind[kind] += n;
  if (!message.empty()) first_error.try_emplace(kind, message);
}

void OpStats::Merge(const OpStats& other) {
  latency.Merge(other.latency);
  errors += other.errors;
  for (const auto& [kind, n] : other.errors_by_kind) errors_by_kind[kind] += n;
  for (const auto& [kind, message] : other.first_error) first_error.try_emplace(kind, message);
  not_found += other.not_found;
  siblings += other.siblings;
}

double RunReport::Throughput() const {
  if (seconds <= 0) return 0;
  return static_cast<double>(read.latency.count() + write.latency.count()) / seconds;
}

namespace {

double Ms(uint64_t ns) { return static_cast<double>(ns) / 1e6; }

std::string Fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

std::string OpJson(const OpStats& s) {
  std::ostringstream os;
  const Histogram& h = s.latency;
  os << "{\"count\":" << h.count() << ",\"errors\":" << s.errors << ",\"errors_by_kind\":{";
  bool first = true;
  for (const auto& [kind, n] : s.errors_by_kind) {
    os << (first ? "" : ",") << JsonString(kind) << ":" << n;
    first = false;
  }
  os << "},\"first_error\":{";
  first = true;
  for (const auto& [kind, message] : s.first_error) {
    os << (first ? "" : ",") << JsonString(kind) << ":" << JsonString(message);
    first = false;
  }
  os << "},\"not_found\":" << s.not_found << ",\"siblings\":" << s.siblings
     << ",\"p50_ms\":" << Fixed(Ms(h.Percentile(0.5)), 3) << ",\"p90_ms\":" << Fixed(Ms(h.Percentile(0.9)), 3)
     << ",\"p99_ms\":" << Fixed(Ms(h.Percentile(0.99)), 3) << ",\"p999_ms\":" << Fixed(Ms(h.Percentile(0.999)), 3)
     << ",\"max_ms\":" << Fixed(Ms(h.max_ns()), 3) << ",\"mean_ms\":" << Fixed(h.mean_ns() / 1e6, 3) << "}";
  return os.str();
}

void OpLine(std::ostringstream& os, const char* name, const OpStats& s, double seconds) {
  const Histogram& h = s.latency;
  char buf[256];
  std::snprintf(buf, sizeof buf, "%-6s %10llu %10.0f %8.3f %8.3f %8.3f %8.3f %8.3f %8llu\n", name,
                static_cast<unsigned long long>(h.count()),
                seconds > 0 ? static_cast<double>(h.count()) / seconds : 0.0, Ms(h.Percentile(0.5)),
                Ms(h.Percentile(0.9)), Ms(h.Percentile(0.99)), Ms(h.Percentile(0.999)), Ms(h.max_ns()),
                static_cast<unsigned long long>(s.errors));
  os << buf;
}

}  // namespace

std::string ReportText(const RunReport& r) {
  std::ostringstream os;
  os << r.backend << ", workload " << r.workload << " (" << r.distribution << ", " << r.keys << " keys, "
     << r.value_size << "-byte " << (r.distinct_values ? "distinct" : "equal") << " values), ";
  if (r.target_rate > 0) {
    os << "open loop at " << Fixed(r.target_rate, 0) << " ops/s";
  } else {
    os << "closed loop";
  }
  os << ", concurrency " << r.concurrency << "\n";
  if (r.loaded) os << "loaded " << r.loaded << " keys (" << r.load_errors << " errors)\n";
  os << "measured " << Fixed(r.seconds, 2) << " s: " << Fixed(r.Throughput(), 0) << " ops/s\n";
  os << "op          count      ops/s   p50 ms   p90 ms   p99 ms p99.9 ms   max ms   errors\n";
  OpLine(os, "read", r.read, r.seconds);
  OpLine(os, "write", r.write, r.seconds);
  for (const auto* op : {&r.read, &r.write}) {
    for (const auto& [kind, n] : op->errors_by_kind) {
      os << (op == &r.read ? "read" : "write") << " errors: " << n << " " << kind;
      if (auto it = op->first_error.find(kind); it != op->first_error.end())
        os << " (first: " << it->second << ")";
      os << "\n";
    }
  }
  os << "reads not found: " << r.read.not_found << "; reads with siblings: " << r.read.siblings << "\n";
  return os.str();
}

std::string ReportJson(const RunReport& r) {
  std::ostringstream os;
  os << "{\"backend\":" << JsonString(r.backend) << ",\"workload\":" << JsonString(r.workload)
     << ",\"distribution\":" << JsonString(r.distribution) << ",\"keys\":" << r.keys
     << ",\"value_size\":" << r.value_size
     << ",\"distinct_values\":" << (r.distinct_values ? "true" : "false") << ",\"concurrency\":" << r.concurrency
     << ",\"target_rate\":" << Fixed(r.target_rate, 1) << ",\"seconds\":" << Fixed(r.seconds, 3)
     << ",\"throughput\":" << Fixed(r.Throughput(), 1) << ",\"loaded\":" << r.loaded
     << ",\"load_errors\":" << r.load_errors << ",\"read\":" << OpJson(r.read) << ",\"write\":" << OpJson(r.write)
     << "}";
  return os.str();
}

std::string PlotScript(const RunReport& r, const std::string& png_path) {
  std::ostringstream os;
  os << "set terminal pngcairo size 900,560\n"
     << "set output " << JsonString(png_path) << "\n"
     << "set title " << JsonString(r.backend + ", workload " + r.workload) << "\n"
     << "set logscale x\nset xlabel 'percentile'\nset ylabel 'latency (ms)'\nset grid\nset key left top\n"
     << "set xtics ('50' 2, '90' 10, '99' 100, '99.9' 1000, '99.99' 10000, '99.999' 100000)\n";
  std::string plot = "plot";
  std::ostringstream data;
  for (const auto* op : {&r.read, &r.write}) {
    std::vector<Histogram::Point> points = op->latency.Spectrum();
    if (points.empty()) continue;
    const char* name = op == &r.read ? "read" : "write";
    plot += std::string(plot == "plot" ? " " : ", ") + "$" + name + " using 1:2 with steps title '" + name + "'";
    data << "$" << name << " << EOD\n";
    for (const Histogram::Point& p : points) {
      // The maximum sits one step right of the last tail point.
      const double tail = p.quantile < 1 ? 1 - p.quantile : 0.5 / static_cast<double>(op->latency.count());
      data << Fixed(1 / tail, 3) << " " << Fixed(Ms(p.ns), 4) << "\n";
    }
    data << "EOD\n";
  }
  if (plot == "plot") return "";
  os << data.str() << plot << "\n";
  return os.str();
}

}  // namespace dynamo::bench
