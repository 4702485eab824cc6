#include "errors.h"

#include <array>
#include <string_view>

namespace py = pybind11;

namespace dynamo::python {
namespace {

enum class ErrorClass : size_t {
  kError,
  kQuorum,
  kTimeout,
  kInvalidArgument,
  kBusy,
  kClosed,
  kCount
};
constexpr std::array<const char*, static_cast<size_t>(ErrorClass::kCount)> kClassNames = {
    "Error", "QuorumError", "TimeoutError", "InvalidArgument", "BusyError", "ClosedError"};

// Which exception class each status code raises.
ErrorClass ClassFor(StatusCode code) {
  switch (code) {
    case StatusCode::kUnavailable:
      return ErrorClass::kQuorum;
    case StatusCode::kTimeout:
      return ErrorClass::kTimeout;
    case StatusCode::kInvalidArgument:
      return ErrorClass::kInvalidArgument;
    case StatusCode::kBusy:
      return ErrorClass::kBusy;
    case StatusCode::kAborted:
      return ErrorClass::kClosed;
    default:
      return ErrorClass::kError;
  }
}

// The classes, looked up by BindErrors; their references are kept for the
// life of the process (never released after the interpreter is gone).
std::array<PyObject*, static_cast<size_t>(ErrorClass::kCount)> classes{};

}  // namespace

void Raise(const Status& s, size_t acks) {
  const ErrorClass cls = ClassFor(s.code());
  const std::string_view message = s.message();
  // A node's message is bytes from the network: never a UnicodeDecodeError
  // in place of the error it tells of.
  py::object text = py::reinterpret_steal<py::object>(PyUnicode_DecodeUTF8(
      message.data(), static_cast<Py_ssize_t>(message.size()), "backslashreplace"));
  if (!text) throw py::error_already_set();
  const std::string code(StatusCodeName(s.code()));
  py::tuple args = cls == ErrorClass::kQuorum ? py::make_tuple(text, code, s.in_doubt(), acks)
                                              : py::make_tuple(text, code, s.in_doubt());
  PyErr_SetObject(classes[static_cast<size_t>(cls)], args.ptr());
  throw py::error_already_set();
}

void Check(const Status& s, size_t acks) {
  if (!s.ok()) Raise(s, acks);
}

void BindErrors(py::module_& m) {
  (void)m;
  py::module_ errors = py::module_::import("dynamo._errors");
  for (size_t i = 0; i < kClassNames.size(); ++i) {
    classes[i] = py::object(errors.attr(kClassNames[i])).release().ptr();
  }
}

}  // namespace dynamo::python
