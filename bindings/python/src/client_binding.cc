// dynamo.Client and dynamo.GetResult.
//
// The GIL is released only around calls into the C++ client; Python objects
// are built after it is taken back, and the resolver runs here, on the
// calling thread, never on the client's I/O thread.
#include <pybind11/functional.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "dynamo/client.h"
#include "errors.h"

namespace py = pybind11;

namespace dynamo::python {
namespace {

// The longest timeout a Client takes, in seconds (a week).
constexpr double kTimeoutSecondsMax = 7 * 24 * 3600.0;
// Larger than any context a read or write returns (256 clock entries).
constexpr size_t kContextBytesMax = 64u << 10;

// Bytes, bytearray or str (as UTF-8) as a string; InvalidArgument past
// `max` bytes, checked before anything is copied.
std::string Bytes(const py::handle& obj, const char* what, size_t max = SIZE_MAX,
                  const char* limit = nullptr) {
  Py_ssize_t size = -1;
  if (PyBytes_Check(obj.ptr())) size = PyBytes_GET_SIZE(obj.ptr());
  if (PyByteArray_Check(obj.ptr())) size = PyByteArray_GET_SIZE(obj.ptr());
  if (PyUnicode_Check(obj.ptr()) && PyUnicode_IS_ASCII(obj.ptr()))
    size = PyUnicode_GET_LENGTH(obj.ptr());
  if (size >= 0 && static_cast<size_t>(size) > max) {
    throw StatusError{
        Status::InvalidArgument(std::string(what) + " of " + std::to_string(size) +
                                " bytes exceeds " + limit + " (" + std::to_string(max) + ")"),
        0};
  }
  if (py::isinstance<py::bytes>(obj)) return obj.cast<std::string>();
  if (py::isinstance<py::bytearray>(obj)) {
    return std::string(py::reinterpret_borrow<py::bytearray>(obj));
  }
  if (py::isinstance<py::str>(obj)) {
    try {
      return obj.cast<std::string>();  // UTF-8
    } catch (const py::cast_error&) {
      throw StatusError{
          Status::InvalidArgument(std::string(what) + " is a str that is not valid UTF-8"), 0};
    }
  }
  throw StatusError{Status::InvalidArgument(std::string(what) + " must be bytes or str"), 0};
}

struct PyGetResult {
  std::vector<std::string> values;
  std::string context;
  bool found = false;
};

class PyClient {
 public:
  PyClient(const py::object& seeds, int r, int w, double timeout, const std::string& mode,
           bool durable_writes, const std::string& coordinator) {
    ClientOptions o;
    if (py::isinstance<py::str>(seeds)) {
      o.seeds.push_back(seeds.cast<std::string>());
    } else {
      for (const py::handle& s : seeds) o.seeds.push_back(s.cast<std::string>());
    }
    o.r = r;
    o.w = w;
    if (!(timeout > 0 && timeout <= kTimeoutSecondsMax)) {
      Check(Status::InvalidArgument("timeout must be a positive number of seconds, at most " +
                                    std::to_string(static_cast<int>(kTimeoutSecondsMax))));
    }
    o.timeout_ms = static_cast<uint64_t>(timeout * 1000.0 + 0.5);
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
    Result<std::unique_ptr<Client>> opened = Status::Internal("unset");
    {
      py::gil_scoped_release release;
      opened = Client::Open(std::move(o));
    }
    Check(opened.status());
    client_ = std::move(*opened);
  }

  // Unless closed, the client drains its work, up to its timeout: without
  // the GIL, so that other Python threads go on meanwhile.
  ~PyClient() {
    if (!client_) return;
    std::shared_ptr<Client> c = std::move(client_);
    py::gil_scoped_release release;
    c.reset();
  }

  PyGetResult Get(const py::object& key) {
    std::string k = Bytes(key, "key");
    Receipt receipt;
    ReadOptions ro;
    ro.receipt = &receipt;
    Result<GetResult> r = Status::Internal("unset");
    std::shared_ptr<Client> c = client();
    {
      py::gil_scoped_release release;
      r = c->Get(k, ro);
    }
    Check(r.status(), receipt.acks.size());
    PyGetResult out{std::move(r->values), std::move(r->context), r->found};
    if (out.values.size() > 1 && resolver_) {
      py::list values;
      for (const std::string& v : out.values) values.append(py::bytes(v));
      py::object merged = resolver_(values);
      out.values = {Bytes(merged, "the resolver's result")};
    }
    return out;
  }

  py::bytes Write(const py::object& key, const std::optional<py::object>& value,
                  const py::object& context, std::optional<bool> durable) {
    std::shared_ptr<Client> c = client();
    std::string k = Bytes(key, "key", c->options().key_bytes_max, "key_bytes_max");
    WriteOptions wo;
    if (!context.is_none())
      wo.context = Bytes(context, "context", kContextBytesMax, "the largest context");
    wo.durable = durable;
    Receipt receipt;
    wo.receipt = &receipt;
    std::string v = value ? Bytes(*value, "value", c->options().value_bytes_max, "value_bytes_max")
                          : std::string();
    Result<std::string> r = Status::Internal("unset");
    {
      py::gil_scoped_release release;
      r = value ? c->Put(k, v, wo) : c->Delete(k, wo);
    }
    Check(r.status(), receipt.acks.size());
    return py::bytes(*r);
  }

  void SetResolver(const py::object& fn) {
    if (!fn.is_none() && !PyCallable_Check(fn.ptr())) {
      Check(Status::InvalidArgument("the resolver must be callable or None"));
    }
    resolver_ = fn.is_none() ? py::object() : fn;
  }

  py::list Where(const py::object& key) {
    std::vector<Placement> places = client()->Where(Bytes(key, "key"));
    py::list out;
    for (const Placement& p : places) {
      py::dict d;
      d["id"] = p.id;
      d["address"] = p.address;
      d["state"] = p.state;
      d["role"] = p.role;
      out.append(d);
    }
    return out;
  }

  py::list Inspect(const py::object& key) {
    std::string k = Bytes(key, "key");
    Result<std::vector<ReplicaVersions>> inspected = Status::Internal("unset");
    std::shared_ptr<Client> c = client();
    {
      py::gil_scoped_release release;
      inspected = c->Inspect(k);
    }
    Check(inspected.status());
    const std::vector<ReplicaVersions>& replicas = *inspected;
    py::list out;
    for (const ReplicaVersions& rv : replicas) {
      py::dict d;
      d["node"] = rv.node;
      if (!rv.error.empty()) d["error"] = rv.error;
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
      d["address"] = m.address;
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
    return d;
  }

  void Refresh() {
    Status s;
    std::shared_ptr<Client> c = client();
    {
      py::gil_scoped_release release;
      s = c->Refresh();
    }
    Check(s);
  }

  // Calls other threads have in progress end (Client::Close) before it
  // returns; the last of them frees the client.
  // Threads that close at once all return once the client is closed (the
  // C++ Close waits likewise); calls meanwhile raise ClosedError.
  void Close() {
    std::shared_ptr<Client> c = client_;
    if (!c) return;
    {
      py::gil_scoped_release release;
      c->Close();
    }
    client_.reset();
  }

 private:
  // With the GIL held: a call keeps the client alive while it runs without
  // the GIL, since another thread may close it meanwhile.
  std::shared_ptr<Client> client() {
    if (!client_) Check(Status::Aborted("client closed"));
    return client_;
  }

  std::shared_ptr<Client> client_;
  py::object resolver_;
};

}  // namespace

void BindClient(py::module_& m) {
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
      .def_property_readonly("found", [](const PyGetResult& r) { return r.found; })
      .def("__repr__", [](const PyGetResult& r) {
        return "GetResult(found=" + std::string(r.found ? "True" : "False") + ", values=" +
               std::to_string(r.values.size()) + ")";
      });

  py::class_<PyClient>(m, "Client",
                       "A connection to a dynamo cluster; it coordinates every read and write.")
      .def(py::init<const py::object&, int, int, double, const std::string&, bool,
                    const std::string&>(),
           py::arg("seeds"), py::arg("r") = 2, py::arg("w") = 2, py::arg("timeout") = 1.0,
           py::arg("mode") = "causal", py::arg("durable_writes") = true,
           py::arg("coordinator") = "ranked")
      .def("get", &PyClient::Get, py::arg("key"),
           "Read a key; GetResult.found is False when absent.")
      .def(
          "put",
          [](PyClient& c, const py::object& key, const py::object& value, const py::object& context,
             std::optional<bool> durable) { return c.Write(key, value, context, durable); },
          py::arg("key"), py::arg("value"), py::arg("context") = py::none(),
          py::arg("durable") = py::none(),
          "Write a value; returns the new context. durable: wait for a synced copy "
          "(None: the client's durable_writes).")
      .def(
          "delete",
          [](PyClient& c, const py::object& key, const py::object& context,
             std::optional<bool> durable) { return c.Write(key, std::nullopt, context, durable); },
          py::arg("key"), py::arg("context") = py::none(), py::arg("durable") = py::none(),
          "Delete a key (a tombstone write); durable as for put.")
      .def("set_resolver", &PyClient::SetResolver, py::arg("fn"),
           "fn(list[bytes]) -> bytes merges concurrent values on reads; None removes it.")
      .def("where", &PyClient::Where, py::arg("key"))
      .def("inspect", &PyClient::Inspect, py::arg("key"))
      .def("members", &PyClient::Members)
      .def("ring", &PyClient::Ring)
      .def("stats", &PyClient::Stats)
      .def("refresh", &PyClient::Refresh, "Pull the cluster map and members now.")
      .def("close", &PyClient::Close)
      .def(
          "__enter__", [](PyClient& c) -> PyClient& { return c; },
          py::return_value_policy::reference)
      .def("__exit__", [](PyClient& c, const py::args&) { c.Close(); });
}

}  // namespace dynamo::python
