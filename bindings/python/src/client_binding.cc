// dynamo.Client, dynamo.GetResult and dynamo.Receipt.
//
// The GIL is released only around calls into the C++ client; Python objects
// are built after it is taken back, and the resolver runs here, on the
// calling thread, never on the client's I/O thread.
#include <pybind11/functional.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "dynamo/client.h"
#include "errors.h"

namespace py = pybind11;

namespace dynamo::python {
namespace {

// The longest timeout a Client takes, in seconds (a week).
constexpr double kTimeoutSecondsMax = kTimeoutMsMax / 1000.0;
// Larger than any context a read or write returns (256 clock entries).
constexpr size_t kContextBytesMax = 64u << 10;

std::string TypeName(const py::handle& obj) {
  return py::str(py::type::handle_of(obj).attr("__name__")).cast<std::string>();
}

// Text from a node (an error message, an id) as str: bytes that are not
// UTF-8 are kept as backslash escapes instead of failing the whole call.
py::str NodeText(const std::string& text) {
  PyObject* decoded =
      PyUnicode_DecodeUTF8(text.data(), static_cast<Py_ssize_t>(text.size()), "backslashreplace");
  if (decoded == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<py::str>(decoded);
}

// Bytes, bytearray or str (as UTF-8) as a string; InvalidArgument past
// `max` bytes, checked before anything is copied (a str's UTF-8 is at least
// one byte per character); TypeError for any other type.
std::string Bytes(const py::handle& obj, const char* what, size_t max = SIZE_MAX,
                  const char* limit = nullptr) {
  Py_ssize_t size = -1;
  bool at_least = false;  // size counts a str's characters, not all ASCII
  if (PyBytes_Check(obj.ptr())) size = PyBytes_GET_SIZE(obj.ptr());
  if (PyByteArray_Check(obj.ptr())) size = PyByteArray_GET_SIZE(obj.ptr());
  if (PyUnicode_Check(obj.ptr())) {
    size = PyUnicode_GET_LENGTH(obj.ptr());
    at_least = !PyUnicode_IS_ASCII(obj.ptr());
  }
  if (size >= 0 && static_cast<size_t>(size) > max) {
    Raise(Status::InvalidArgument(std::string(what) + " of " + (at_least ? "at least " : "") +
                                  std::to_string(size) + " bytes exceeds " + limit + " (" +
                                  std::to_string(max) + ")"));
  }
  if (py::isinstance<py::bytes>(obj)) return obj.cast<std::string>();
  if (py::isinstance<py::bytearray>(obj)) {
    return std::string(py::reinterpret_borrow<py::bytearray>(obj));
  }
  if (py::isinstance<py::str>(obj)) {
    try {
      return obj.cast<std::string>();  // UTF-8
    } catch (const py::cast_error&) {
      Raise(Status::InvalidArgument(std::string(what) + " is a str that is not valid UTF-8"));
    }
  }
  throw py::type_error(std::string(what) + " must be bytes, bytearray or str, not " +
                       TypeName(obj));
}

// A timeout in seconds as milliseconds; nullopt: 0 (the client's default).
uint64_t TimeoutArg(std::optional<double> seconds) {
  if (!seconds) return 0;
  if (!(*seconds > 0 && *seconds <= kTimeoutSecondsMax)) {
    Check(Status::InvalidArgument("timeout must be a positive number of seconds, at most " +
                                  std::to_string(static_cast<int>(kTimeoutSecondsMax))));
  }
  return std::max<uint64_t>(1, static_cast<uint64_t>(*seconds * 1000.0 + 0.5));
}

// An int argument in [lo, hi]: TypeError for what is not an int (bool
// included), InvalidArgument outside the range.
int64_t IntArg(const py::handle& v, const char* name, int64_t lo, int64_t hi) {
  if (!py::isinstance<py::int_>(v) || py::isinstance<py::bool_>(v)) {
    throw py::type_error(std::string(name) + " must be an int, not " + TypeName(v));
  }
  int overflow = 0;
  const long long n = PyLong_AsLongLongAndOverflow(v.ptr(), &overflow);
  if (overflow != 0 || n < lo || n > hi) {
    Check(Status::InvalidArgument(std::string(name) + " must be from " + std::to_string(lo) +
                                  " to " + std::to_string(hi)));
  }
  return n;
}

// An R or W; None: 0 (the client's default, for a call's). Whether it fits
// the cluster's replica count is the client's check.
int QuorumArg(const char* name, const py::object& n) {
  if (n.is_none()) return 0;
  return static_cast<int>(IntArg(n, name, 1, std::numeric_limits<int>::max()));
}

// Runs `f` without the GIL and returns what it returns. The GIL is taken
// back by a plain call, not by a guard's destructor: a daemon thread whose
// call ends while the interpreter exits is ended by Python as it takes the
// GIL back (pthread_exit), and that unwinding must not leave a noexcept
// function (std::terminate: the process aborted at exit).
template <typename F>
auto WithoutGil(F&& f) -> decltype(f()) {
  PyThreadState* state = PyEval_SaveThread();
  std::optional<decltype(f())> out;
  try {
    out.emplace(f());
  } catch (...) {
    PyEval_RestoreThread(state);
    throw;
  }
  PyEval_RestoreThread(state);
  return std::move(*out);
}

// How often a call waiting for its answer takes the GIL back to run the
// signal handlers (Ctrl-C in the main thread).
constexpr auto kSignalCheckInterval = std::chrono::milliseconds(100);

// The answer of an asynchronous call, shared with its callback, so that a
// wait a signal ended leaves it to the operation, which goes on to its end.
template <typename T>
struct Answer {
  std::mutex mu;
  std::condition_variable cv;
  std::optional<Result<T>> result;
  Receipt receipt;  // the operation's, filled before its callback runs
};

// Starts a call with `start(receipt, done)` and waits for its answer without
// the GIL, taking the GIL back every kSignalCheckInterval to run the signal
// handlers: one that raises (KeyboardInterrupt) ends the wait with its
// exception, and the operation goes on without a waiter (a write may still
// be applied). `receipt` gets the operation's receipt once it answered.
template <typename T, typename Start>
Result<T> Await(Start&& start, Receipt& receipt) {
  auto answer = std::make_shared<Answer<T>>();
  WithoutGil([&] {
    start(&answer->receipt, [answer](Result<T> r) {
      std::lock_guard lock(answer->mu);
      answer->result.emplace(std::move(r));
      answer->cv.notify_all();
    });
    return true;
  });
  while (!WithoutGil([&] {
    std::unique_lock lock(answer->mu);
    return answer->cv.wait_for(lock, kSignalCheckInterval,
                               [&] { return answer->result.has_value(); });
  })) {
    if (PyErr_CheckSignals() != 0) throw py::error_already_set();
  }
  std::lock_guard lock(answer->mu);
  receipt = answer->receipt;
  return std::move(*answer->result);
}

// Every client this process opened, for the close at exit; weak, so it
// keeps none alive. With the GIL held.
std::vector<std::weak_ptr<Client>>& OpenClients() {
  static auto* clients = new std::vector<std::weak_ptr<Client>>();
  return *clients;
}
// Set by CloseAllAtExit; from then on every call raises ClosedError. With
// the GIL held.
bool closed_at_exit = false;

// Clients dropped without close() that are still draining on their own
// threads (~PyClient).
class DropsInProgress {
 public:
  void Begin() {
    std::lock_guard lock(mu_);
    ++count_;
  }
  void End() {
    std::lock_guard lock(mu_);
    if (--count_ == 0) cv_.notify_all();
  }
  // Without the GIL. In a process forked since (the drains' threads were
  // not copied, and the lock may have been copied held), at once.
  void WaitForNone() {
    if (::getpid() != pid_) return;
    std::unique_lock lock(mu_);
    cv_.wait(lock, [this] { return count_ == 0; });
  }

 private:
  const pid_t pid_ = ::getpid();
  std::mutex mu_;
  std::condition_variable cv_;
  size_t count_ = 0;
};

// With the GIL held; true also when the thread cannot be told (a thread
// Python's threading module does not know is never joined at exit either).
bool InDaemonThread() {
  try {
    return py::module_::import("threading").attr("current_thread")().attr("daemon").cast<bool>();
  } catch (const py::error_already_set&) {
    return true;
  } catch (const py::cast_error&) {
    return true;
  }
}

DropsInProgress& Drops() {
  static auto* drops = new DropsInProgress();  // used by threads that may outlive statics
  return *drops;
}

// What one call did (dynamo::Receipt), filled by the call it is passed to,
// also when the call raises.
struct PyReceipt {
  Receipt receipt;
};

struct PyGetResult {
  std::vector<std::string> values;
  std::string context;
  bool found = false;
};

class PyClient {
 public:
  PyClient(const py::object& seeds, const py::object& r, const py::object& w, double timeout,
           const std::string& mode, bool durable_writes, const std::string& coordinator,
           const py::object& key_bytes_max, const py::object& value_bytes_max) {
    ClientOptions o;
    auto seed = [&](const py::handle& s) {
      if (!py::isinstance<py::str>(s)) {
        throw py::type_error("a seed must be a \"host:port\" str, not " + TypeName(s));
      }
      o.seeds.push_back(Bytes(s, "a seed"));
    };
    if (py::isinstance<py::str>(seeds)) {
      seed(seeds);
    } else if (py::isinstance<py::bytes>(seeds) || py::isinstance<py::bytearray>(seeds) ||
               !py::isinstance<py::iterable>(seeds)) {
      throw py::type_error("seeds must be a str or an iterable of str, not " + TypeName(seeds));
    } else {
      for (const py::handle& s : seeds) seed(s);
    }
    if (!r.is_none()) o.r = QuorumArg("r", r);
    if (!w.is_none()) o.w = QuorumArg("w", w);
    o.timeout_ms = TimeoutArg(timeout);
    // Past the ceilings, Client::Open refuses them.
    if (!key_bytes_max.is_none()) {
      o.key_bytes_max = static_cast<uint32_t>(
          IntArg(key_bytes_max, "key_bytes_max", 1, std::numeric_limits<uint32_t>::max()));
    }
    if (!value_bytes_max.is_none()) {
      o.value_bytes_max = static_cast<uint32_t>(
          IntArg(value_bytes_max, "value_bytes_max", 1, std::numeric_limits<uint32_t>::max()));
    }
    if (mode == "causal") {
      o.mode = Mode::kCausal;
    } else if (mode == "lww") {
      o.mode = Mode::kLww;
    } else {
      Check(Status::InvalidArgument("mode must be \"causal\" or \"lww\""));
    }
    o.durable_writes = durable_writes;
    if (coordinator == "ranked") {
      o.coordinator = Coordinator::kClientRanked;
    } else if (coordinator == "fastest") {
      o.coordinator = Coordinator::kFastestReplica;
    } else {
      Check(Status::InvalidArgument("coordinator must be \"ranked\" or \"fastest\""));
    }
    if (closed_at_exit) Check(Status::Aborted("client closed: the interpreter is exiting"));
    Result<std::unique_ptr<Client>> opened = WithoutGil([&] { return Client::Open(std::move(o)); });
    Check(opened.status());
    client_ = std::move(*opened);
    std::vector<std::weak_ptr<Client>>& open = OpenClients();
    std::erase_if(open, [](const std::weak_ptr<Client>& c) { return c.expired(); });
    open.push_back(client_);
  }

  // Unless closed, the client drains its work, up to its timeout, without
  // the GIL, so that other Python threads go on meanwhile. In a daemon
  // thread the drain runs on a thread of its own and the destructor returns
  // at once: taking the GIL back after the interpreter began to exit, Python
  // ends a daemon thread there, and in a destructor that aborted the process
  // (see WithoutGil); the close at exit waits for such drains. (Other threads
  // end before the interpreter exits. Once closed at exit there is nothing
  // left to wait for.)
  ~PyClient() {
    if (!client_) return;
    std::shared_ptr<Client> c = std::move(client_);
    if (closed_at_exit) return;
    if (InDaemonThread()) {
      Drops().Begin();
      std::thread([c = std::move(c)]() mutable {
        c.reset();
        Drops().End();
      }).detach();
      return;
    }
    py::gil_scoped_release release;
    c.reset();
  }

  PyGetResult Get(const py::object& key, const py::object& r, std::optional<double> timeout,
                  PyReceipt* receipt_out) {
    if (receipt_out) receipt_out->receipt = Receipt{};  // also when this call raises before it ran
    std::shared_ptr<Client> c = client();
    std::string k = Bytes(key, "key", c->options().key_bytes_max, "key_bytes_max");
    ReadOptions ro;
    ro.r = QuorumArg("r", r);
    ro.timeout_ms = TimeoutArg(timeout);
    Receipt receipt;
    Result<GetResult> res = Await<GetResult>(
        [&](Receipt* rc, auto done) {
          ro.receipt = rc;
          c->GetAsync(std::move(k), std::move(ro), std::move(done));
        },
        receipt);
    if (receipt_out) receipt_out->receipt = receipt;
    Check(res.status(), receipt.acks.size());
    PyGetResult out{std::move(res->values), std::move(res->context), res->found};
    // Taken before anything that may run Python code (a collection, another
    // thread): alive through the call even if set_resolver replaces it.
    py::object resolver = resolver_;
    if (out.values.size() > 1 && resolver) {
      py::list values;
      for (const std::string& v : out.values) values.append(py::bytes(v));
      py::object merged = resolver(values);
      out.values = {Bytes(merged, "the resolver's result")};
    }
    return out;
  }

  py::bytes Write(const py::object& key, const std::optional<py::object>& value,
                  const py::object& context, std::optional<bool> durable, const py::object& w,
                  std::optional<double> timeout, PyReceipt* receipt_out) {
    if (receipt_out) receipt_out->receipt = Receipt{};  // also when this call raises before it ran
    std::shared_ptr<Client> c = client();
    std::string k = Bytes(key, "key", c->options().key_bytes_max, "key_bytes_max");
    WriteOptions wo;
    if (!context.is_none())
      wo.context = Bytes(context, "context", kContextBytesMax, "the largest context");
    wo.durable = durable;
    wo.w = QuorumArg("w", w);
    wo.timeout_ms = TimeoutArg(timeout);
    std::string v = value ? Bytes(*value, "value", c->options().value_bytes_max, "value_bytes_max")
                          : std::string();
    Receipt receipt;
    Result<std::string> res = Await<std::string>(
        [&](Receipt* rc, auto done) {
          wo.receipt = rc;
          if (value) {
            c->PutAsync(std::move(k), std::move(v), std::move(wo), std::move(done));
          } else {
            c->DeleteAsync(std::move(k), std::move(wo), std::move(done));
          }
        },
        receipt);
    if (receipt_out) receipt_out->receipt = receipt;
    Check(res.status(), receipt.acks.size());
    return py::bytes(*res);
  }

  // For the garbage collector: the resolver may reference this client.
  int Traverse(visitproc visit, void* arg) {
    Py_VISIT(resolver_.ptr());
    return 0;
  }
  void ClearResolver() { resolver_ = py::object(); }

  void SetResolver(const py::object& fn) {
    if (!fn.is_none() && !PyCallable_Check(fn.ptr())) {
      Check(Status::InvalidArgument("the resolver must be callable or None"));
    }
    resolver_ = fn.is_none() ? py::object() : fn;
  }

  py::list Where(const py::object& key) {
    std::shared_ptr<Client> c = client();
    std::vector<Placement> places =
        c->Where(Bytes(key, "key", c->options().key_bytes_max, "key_bytes_max"));
    py::list out;
    for (const Placement& p : places) {
      py::dict d;
      d["id"] = p.id;
      d["address"] = NodeText(p.address);
      d["state"] = p.state;
      d["role"] = p.role;
      out.append(d);
    }
    return out;
  }

  py::list Inspect(const py::object& key) {
    std::shared_ptr<Client> c = client();
    std::string k = Bytes(key, "key", c->options().key_bytes_max, "key_bytes_max");
    Result<std::vector<ReplicaVersions>> inspected = WithoutGil([&] { return c->Inspect(k); });
    Check(inspected.status());
    const std::vector<ReplicaVersions>& replicas = *inspected;
    py::list out;
    for (const ReplicaVersions& rv : replicas) {
      py::dict d;
      d["node"] = NodeText(rv.node);
      if (!rv.error.empty()) d["error"] = NodeText(rv.error);
      py::list versions;
      for (const auto& v : rv.versions) {
        py::dict vd;
        vd["dot"] = v.dot;
        vd["value"] = py::bytes(v.value);
        vd["tombstone"] = v.tombstone;
        vd["lww"] = v.lww;
        vd["timestamp_ms"] = v.timestamp_ms;
        vd["context"] = v.context;
        versions.append(vd);
      }
      d["versions"] = versions;
      out.append(d);
    }
    return out;
  }

  py::list Members() {
    py::list out;
    for (const MemberInfo& m : client()->Members()) {
      py::dict d;
      d["id"] = m.id;
      d["address"] = NodeText(m.address);
      d["state"] = m.state;
      d["partitions"] = m.partitions;
      out.append(d);
    }
    return out;
  }

  py::dict Ring() {
    Client::RingInfo info = client()->Ring();
    py::dict d;
    d["epoch"] = info.epoch;
    d["partitions"] = info.partitions;
    d["replicas"] = info.replicas;
    d["owners"] = info.owners;
    return d;
  }

  py::dict Stats() {
    Client::Stats s = client()->stats();
    py::dict d;
    d["gets"] = s.gets;
    d["puts"] = s.puts;
    d["deletes"] = s.deletes;
    d["read_repairs"] = s.read_repairs;
    d["hints"] = s.hints;
    d["refreshes"] = s.refreshes;
    d["errors"] = s.errors;
    d["redirects"] = s.redirects;
    return d;
  }

  void Refresh() {
    std::shared_ptr<Client> c = client();
    Check(WithoutGil([&] { return c->Refresh(); }));
  }

  // Calls other threads have in progress end (Client::Close) before it
  // returns; the last of them frees the client.
  // Threads that close at once all return once the client is closed (the
  // C++ Close waits likewise); calls meanwhile raise ClosedError.
  void Close() {
    std::shared_ptr<Client> c = client_;
    if (!c) return;
    if (!closed_at_exit) {
      WithoutGil([&] {
        c->Close();
        return true;
      });
    }
    client_.reset();
  }

 private:
  // With the GIL held: a call keeps the client alive while it runs without
  // the GIL, since another thread may close it meanwhile.
  std::shared_ptr<Client> client() {
    if (!client_) Check(Status::Aborted("client closed"));
    if (closed_at_exit) Check(Status::Aborted("client closed: the interpreter is exiting"));
    return client_;
  }

  std::shared_ptr<Client> client_;
  py::object resolver_;
};

// The client of a Python object of the Client type, or nullptr while its
// __init__ has not finished (the GC may look at it then).
PyClient* Constructed(PyObject* self) {
  auto* inst = reinterpret_cast<py::detail::instance*>(self);
  py::detail::value_and_holder vh = inst->get_value_and_holder(nullptr, false);
  return vh && vh.holder_constructed() ? vh.value_ptr<PyClient>() : nullptr;
}

// At interpreter exit (atexit, before daemon threads are stopped): closes
// every client still open, so each drains as close() does, the copies and
// repairs of answered calls included, and its I/O thread stops before the
// process exits. Calls from then on raise ClosedError without giving up the
// GIL.
void CloseAllAtExit() {
  closed_at_exit = true;
  std::vector<std::shared_ptr<Client>> open;
  for (const std::weak_ptr<Client>& c : OpenClients()) {
    if (std::shared_ptr<Client> live = c.lock()) open.push_back(std::move(live));
  }
  OpenClients().clear();
  WithoutGil([&] {
    for (const std::shared_ptr<Client>& c : open) c->Close();
    open.clear();
    Drops().WaitForNone();  // each ends at most its client's timeout after the close
    return true;
  });
}

}  // namespace

void BindClient(py::module_& m) {
  py::module_::import("atexit").attr("register")(py::cpp_function(&CloseAllAtExit));

  py::class_<PyGetResult>(m, "GetResult", "The outcome of Client.get.")
      .def_property_readonly(
          "values",
          [](const PyGetResult& r) {
            py::list l;
            for (const std::string& v : r.values) l.append(py::bytes(v));
            return l;
          },
          "Live values: one after the resolver ran, else every sibling; empty when not found.")
      .def_property_readonly(
          "context", [](const PyGetResult& r) { return py::bytes(r.context); },
          "Pass to the next put or delete of this key.")
      .def_property_readonly(
          "found", [](const PyGetResult& r) { return r.found; },
          "Whether the key holds a live value (False: never written, or deleted).")
      .def("__repr__", [](const PyGetResult& r) {
        return "GetResult(found=" + std::string(r.found ? "True" : "False") + ", values=" +
               std::to_string(r.values.size()) + ")";
      });

  py::class_<PyReceipt>(m, "Receipt",
                        "What one call did; pass one as receipt= and read it after the call "
                        "(also after it raised).")
      .def(py::init<>(), "An empty receipt; pass it to a call as receipt=.")
      .def_property_readonly(
          "acks",
          [](const PyReceipt& r) {
            py::list l;
            for (const Receipt::Ack& a : r.receipt.acks) {
              py::dict d;
              d["node"] = a.node;
              d["role"] = a.role;
              d["hint"] = a.hint;
              l.append(d);
            }
            return l;
          },
          "Nodes that acknowledged (writes) or answered (reads): node, role "
          "(coordinator, primary or fallback) and, for a fallback, the primary it stands in for.")
      .def_property_readonly(
          "hints", [](const PyReceipt& r) { return r.receipt.hints; },
          "Copies stored as hints on fallbacks.")
      .def_property_readonly(
          "read_repairs", [](const PyReceipt& r) { return r.receipt.read_repairs; },
          "Replicas found stale by the time the read answered.")
      .def_property_readonly(
          "version_vector", [](const PyReceipt& r) { return r.receipt.version_vector; },
          "The resulting clock, e.g. \"{a1b2c3:4}\".")
      .def_property_readonly(
          "epoch", [](const PyReceipt& r) { return r.receipt.epoch; },
          "The cluster map epoch used.")
      .def_property_readonly(
          "coordinator_retries", [](const PyReceipt& r) { return r.receipt.coordinator_retries; },
          "Writes: coordinators tried after the first failed or did not answer in time.")
      .def_property_readonly(
          "redirects", [](const PyReceipt& r) { return r.receipt.redirects; },
          "Replicas asked in place of a node that refused as no longer replicating the key, "
          "on a map newer than the client's.")
      .def("__repr__", [](const PyReceipt& r) {
        return "Receipt(acks=" + std::to_string(r.receipt.acks.size()) +
               ", hints=" + std::to_string(r.receipt.hints) +
               ", read_repairs=" + std::to_string(r.receipt.read_repairs) +
               ", epoch=" + std::to_string(r.receipt.epoch) + ")";
      });

  // The resolver may reference the client (a closure over it): the GC must
  // see that edge, or the cycle keeps the client and its I/O thread forever.
  auto gc = py::custom_type_setup([](PyHeapTypeObject* heap_type) {
    PyTypeObject* type = &heap_type->ht_type;
    type->tp_flags |= Py_TPFLAGS_HAVE_GC;
    type->tp_traverse = [](PyObject* self, visitproc visit, void* arg) {
      Py_VISIT(Py_TYPE(self));
      PyClient* c = Constructed(self);
      return c ? c->Traverse(visit, arg) : 0;
    };
    type->tp_clear = [](PyObject* self) {
      if (PyClient* c = Constructed(self)) c->ClearResolver();
      return 0;
    };
  });
  py::class_<PyClient>(m, "Client",
                       "A connection to a dynamo cluster; it coordinates every read and write.", gc)
      .def(py::init<const py::object&, const py::object&, const py::object&, double,
                    const std::string&, bool, const std::string&, const py::object&,
                    const py::object&>(),
           py::arg("seeds"), py::arg("r") = 2, py::arg("w") = 2, py::arg("timeout") = 1.0,
           py::arg("mode") = "causal", py::arg("durable_writes").noconvert() = true,
           py::arg("coordinator") = "ranked", py::kw_only(), py::arg("key_bytes_max") = py::none(),
           py::arg("value_bytes_max") = py::none(),
           "Connect through seeds (\"host:port\" or a list of them) and load the cluster map. "
           "r, w: the calls' default quorums; timeout: seconds per call; mode: \"causal\" or "
           "\"lww\"; durable_writes: writes wait for a synced copy (True or False); "
           "coordinator: \"ranked\" or \"fastest\"; key_bytes_max, value_bytes_max: the "
           "largest key and value written (None: 2 KiB and 1 MiB, the nodes' defaults; "
           "at most 64 KiB and 256 MiB). QuorumError when no seed answers in time.")
      .def("get", &PyClient::Get, py::arg("key"), py::kw_only(), py::arg("r") = py::none(),
           py::arg("timeout") = py::none(), py::arg("receipt") = py::none(),
           "Read a key; GetResult.found is False when absent. r and timeout (seconds): this "
           "call's (None: the client's); receipt: a Receipt to fill.")
      .def(
          "put",
          [](PyClient& c, const py::object& key, const py::object& value, const py::object& context,
             std::optional<bool> durable, const py::object& w, std::optional<double> timeout,
             PyReceipt* receipt) {
            return c.Write(key, value, context, durable, w, timeout, receipt);
          },
          py::arg("key"), py::arg("value"), py::arg("context") = py::none(),
          py::arg("durable") = py::none(), py::kw_only(), py::arg("w") = py::none(),
          py::arg("timeout") = py::none(), py::arg("receipt") = py::none(),
          "Write a value; returns the new context. durable: wait for a synced copy "
          "(None: the client's durable_writes); w, timeout and receipt as for get.")
      .def(
          "delete",
          [](PyClient& c, const py::object& key, const py::object& context,
             std::optional<bool> durable, const py::object& w, std::optional<double> timeout,
             PyReceipt* receipt) {
            return c.Write(key, std::nullopt, context, durable, w, timeout, receipt);
          },
          py::arg("key"), py::arg("context") = py::none(), py::arg("durable") = py::none(),
          py::kw_only(), py::arg("w") = py::none(), py::arg("timeout") = py::none(),
          py::arg("receipt") = py::none(),
          "Delete a key (a tombstone write); without a context (causal mode) it reads the key "
          "first and deletes what that read saw. durable, w, timeout and receipt as for put.")
      .def("set_resolver", &PyClient::SetResolver, py::arg("fn"),
           "fn(list[bytes]) -> bytes merges concurrent values on reads; None removes it.")
      .def("where", &PyClient::Where, py::arg("key"),
           "The key's preference list as this client sees the cluster now: dicts of id, "
           "address, state and role (the N replicas, then pending replicas, then fallbacks).")
      .def("inspect", &PyClient::Inspect, py::arg("key"),
           "Every replica's stored versions of the key, asked node by node: dicts of node, "
           "versions (dot, value, tombstone, lww, timestamp_ms, context) and, for a node "
           "that did not answer, error.")
      .def("members", &PyClient::Members,
           "The members as this client sees them: dicts of id, address, state and partitions.")
      .def("ring", &PyClient::Ring,
           "The cluster map: epoch, partitions (Q), replicas (N) and owners (per partition).")
      .def("stats", &PyClient::Stats,
           "This client's counters: gets, puts, deletes, read_repairs (repair writes sent), "
           "hints (writes stored as hints), refreshes, errors, redirects.")
      .def("refresh", &PyClient::Refresh, "Pull the cluster map and members now.")
      .def("close", &PyClient::Close,
           "Drain and close: calls in progress (in any thread) and the copies and repairs "
           "already sent get up to the timeout; later calls raise ClosedError. Idempotent; "
           "clients still open are closed so at interpreter exit.")
      .def(
          "__enter__", [](PyClient& c) -> PyClient& { return c; },
          py::return_value_policy::reference)
      .def("__exit__", [](PyClient& c, const py::args&) { c.Close(); });
}

}  // namespace dynamo::python
