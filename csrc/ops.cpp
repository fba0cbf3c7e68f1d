// The importable Python module sem_fast._C: loading it runs the TORCH_LIBRARY_IMPL registrations of
// the kernel files (CPU: csrc/cpu/, CUDA: csrc/cuda/) into the sem_fast_native ops.
//
// The ops' schemas, fake kernels and autograd are defined once, in Python, for every backend
// (sem_fast/ops/schema.py); the dispatcher checks these kernels' C++ signatures against those
// schemas when both are registered, so an argument out of order fails at import, naming the op.
#include <Python.h>

PyMODINIT_FUNC PyInit__C(void) {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "sem_fast_native kernels (torch.ops.sem_fast_native)",
                               -1, nullptr};
  return PyModule_Create(&module);
}
