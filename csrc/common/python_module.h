// The Python face of an extension: an empty module built with the limited API (abi3), so one
// binary serves every Python >= 3.10 (torch's own floor; setup.py's py_limited_api=True makes torch
// define Py_LIMITED_API). Importing it runs the TORCH_LIBRARY registrations in the
// same shared object; the ops are then reached through torch.ops.<namespace>.
#pragma once

#ifndef Py_LIMITED_API
#define Py_LIMITED_API 0x030A0000
#endif
#include <Python.h>

#define AWQ_PYTHON_MODULE(name)                                                                 \
  extern "C" PyObject* PyInit_##name(void) {                                                   \
    static PyModuleDef module_def = {PyModuleDef_HEAD_INIT, #name, nullptr, 0, nullptr, nullptr, \
                                     nullptr, nullptr, nullptr};                               \
    return PyModule_Create(&module_def);                                                       \
  }
