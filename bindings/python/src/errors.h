// Translation of dynamo statuses into the Python exceptions of
// dynamo._errors: one function, one table.
#pragma once

#include <pybind11/pybind11.h>

#include "dynamo/status.h"

namespace dynamo::python {

// Thrown by binding code; turned into the matching Python exception.
struct StatusError {
  Status status;
  size_t acks = 0;
};

// Throws StatusError when `s` is not OK.
void Check(const Status& s, size_t acks = 0);
// Installs the translator of StatusError.
void BindErrors(pybind11::module_& m);

}  // namespace dynamo::python
