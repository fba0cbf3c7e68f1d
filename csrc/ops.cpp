// Schemas of the sem_fast_ext ops and the importable Python module sem_fast._C.
//
// The ops live in their own namespace, sem_fast_ext, so they never clash with the Triton custom
// ops under sem_fast::. CPU kernels: csrc/cpu/, CUDA kernels: csrc/cuda/. Fake (meta) kernels and
// autograd are registered from Python in sem_fast/ext.py (named here by set_python_module).
#include <Python.h>
#include <torch/library.h>

TORCH_LIBRARY(sem_fast_ext, m) {
  m.set_python_module("sem_fast.ext");
  // images (B, H, W, C) uint8 or (B, C, H, W) float -> (x_clean, x_mix), (B, C, H, W) out_dtype;
  // x_mix is an empty (0,) tensor when mixes is false.
  m.def(
      "mix_images(Tensor images, Tensor perm, Tensor lam, Tensor box, Tensor is_cutmix, Tensor? offset, "
      "Tensor? flip, float[] mean, float[] std, int crop_padding, bool reflect, ScalarType out_dtype, "
      "bool channels_last, bool mixes) -> (Tensor, Tensor)");
  // Gradient of mix_images with respect to float images: (B, C, H, W) in_dtype, contiguous. A
  // missing output gradient (None) counts as zeros; at least one must be given.
  m.def(
      "mix_images_backward(Tensor? grad_clean, Tensor? grad_mix, Tensor perm, Tensor lam, Tensor box, "
      "Tensor is_cutmix, Tensor? offset, Tensor? flip, int crop_padding, bool reflect, ScalarType in_dtype) "
      "-> Tensor");
  // -> (loss, ce, sem) () float32 and the per-row logsumexp lse (B,) float32 the backward reuses.
  m.def(
      "sem_loss(Tensor logits, Tensor z_mix, Tensor? z_clean, Tensor labels, Tensor perm, Tensor lam, "
      "float label_smoothing, float gamma, bool sem_mean) -> (Tensor, Tensor, Tensor, Tensor)");
  // d ce / d logits times grad (a () float32 tensor): (B, K) in the logits' dtype.
  m.def(
      "mixed_ce_backward(Tensor grad, Tensor logits, Tensor labels, Tensor perm, Tensor lam, Tensor lse, "
      "float label_smoothing) -> Tensor");
  // d sem / d (z_mix, z_clean) times grad: (dz_mix, dz_clean), dz_clean (0,) unless with_clean.
  m.def(
      "sem_distance_backward(Tensor grad, Tensor z_mix, Tensor z_clean, Tensor perm, Tensor lam, bool sem_mean, "
      "bool with_clean) -> (Tensor, Tensor)");
}

// `import sem_fast._C` loads this library, which runs the registrations above and those of the
// kernel files; the module itself is empty.
PyMODINIT_FUNC PyInit__C(void) {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "sem_fast_ext ops (torch.ops.sem_fast_ext)", -1,
                               nullptr};
  return PyModule_Create(&module);
}
