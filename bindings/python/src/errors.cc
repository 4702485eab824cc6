#include "errors.h"

namespace py = pybind11;

namespace dynamo::python {
namespace {

// Which exception class each status code raises.
const char* ClassFor(StatusCode code) {
  switch (code) {
    case StatusCode::kUnavailable: return "QuorumError";
    case StatusCode::kTimeout: return "TimeoutError";
    case StatusCode::kInvalidArgument: return "InvalidArgument";
    case StatusCode::kBusy:
      return "BusyError";
    case StatusCode::kAborted:
      return "ClosedError";
    default: return "Error";
  }
}

}  // namespace

void Check(const Status& s, size_t acks) {
  if (!s.ok()) throw StatusError{s, acks};
}

void BindErrors(py::module_& m) {
  (void)m;
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const StatusError& e) {
      py::module_ errors = py::module_::import("dynamo._errors");
      const char* cls = ClassFor(e.status.code());
      py::object type = errors.attr(cls);
      py::object instance =
          std::string(cls) == "QuorumError"
              ? type(std::string(e.status.message()), std::string(StatusCodeName(e.status.code())),
                     e.status.in_doubt(), e.acks)
              : type(std::string(e.status.message()), std::string(StatusCodeName(e.status.code())),
                     e.status.in_doubt());
      PyErr_SetObject(type.ptr(), instance.ptr());
    }
  });
}

}  // namespace dynamo::python
