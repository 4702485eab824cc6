// The extension module dynamo._dynamo; the dynamo package re-exports it.
#include <pybind11/pybind11.h>

#include "errors.h"

namespace dynamo::python {
void BindClient(pybind11::module_& m);
}  // namespace dynamo::python

PYBIND11_MODULE(_dynamo, m) {
  m.doc() = "dynamo client (use the dynamo package)";
  dynamo::python::BindErrors(m);
  dynamo::python::BindClient(m);
}
