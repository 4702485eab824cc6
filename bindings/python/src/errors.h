// Translation of dynamo statuses into the Python exceptions of
// dynamo._errors: one function, one table.
#pragma once

#include <pybind11/pybind11.h>

#include "dynamo/status.h"

namespace dynamo::python {

// Sets the Python exception of `s` (its class in dynamo._errors; `acks` for
// QuorumError) and throws pybind11::error_already_set, which pybind11 hands
// back to Python as it is. (A C++ exception left to a registered translator
// would be translated inside pybind11's catch (...): a daemon thread that
// Python ends there as the interpreter exits, by unwinding it, aborted the
// process.)
[[noreturn]] void Raise(const Status& s, size_t acks = 0);
// Raise(s, acks) when `s` is not OK.
void Check(const Status& s, size_t acks = 0);
// Looks the exception classes up, once; dynamo._errors is imported before
// the extension module.
void BindErrors(pybind11::module_& m);

}  // namespace dynamo::python
