// ATen entry points the libtorch benchmarks need but tch does not expose (build.rs compiles this file only with
// the `libtorch` feature, against the headers of the libtorch that torch-sys links).
//
// Each function is the exact op PyTorch's autograd runs for the layer, so a "libtorch" benchmark times the same
// kernel a PyTorch training step would, without an extra elementwise pass to seed the gradient:
// - convolution_backward: what ConvolutionBackward0 calls for Conv2d / ConvTranspose2d (oneDNN on CPU, cuDNN
//   on CUDA), with an output mask selecting the input or the weight gradient;
// - _batch_norm_with_update / batch_norm_backward: what nn.BatchNorm2d in training mode runs;
// - leaky_relu with an explicit slope (tch's binding fixes it at 0.01). It goes through the dispatcher, so
//   autograd records it like any other op.
//
// Tensors cross the boundary as `at::Tensor*`, the representation tch uses (`C_tensor`); results are new heap
// tensors that tch frees. C++ exceptions never cross into Rust: a failure returns null / -1 and leaves its
// message for gan_torch_last_error().

#include <ATen/ATen.h>

#include <exception>
#include <string>

namespace {

thread_local std::string g_last_error;

template <class F>
at::Tensor* guarded(F&& f) {
    try {
        return new at::Tensor(f());
    } catch (const std::exception& e) {
        g_last_error = e.what();
        return nullptr;
    }
}

}  // namespace

extern "C" {

const char* gan_torch_last_error() { return g_last_error.c_str(); }

// One gradient of a 2-D convolution without bias (groups 1, dilation 1, square stride / padding).
// transposed = 0: x [N, C, H, W], w [O, C, k, k] (Conv2d); 1: w [Cin, Cout, k, k] (ConvTranspose2d).
// which = 0: d(input), 1: d(weight).
at::Tensor* gan_torch_conv_backward(const at::Tensor* dy, const at::Tensor* x, const at::Tensor* w,
                                    int64_t stride, int64_t padding, int transposed, int which) {
    return guarded([&] {
        std::array<bool, 3> mask{which == 0, which == 1, false};
        auto r = at::convolution_backward(*dy, *x, *w, c10::nullopt, {stride, stride}, {padding, padding}, {1, 1},
                                          transposed != 0, {0, 0}, 1, mask);
        return which == 0 ? std::get<0>(r) : std::get<1>(r);
    });
}

// Training-mode batch norm forward, updating the running stats in place. out = {y, save_mean, save_var,
// reserve}; the last three feed gan_torch_batch_norm_backward. Returns 0, or -1 on error.
int gan_torch_batch_norm_train(const at::Tensor* x, const at::Tensor* gamma, const at::Tensor* beta,
                               at::Tensor* running_mean, at::Tensor* running_var, double momentum, double eps,
                               at::Tensor** out) {
    try {
        auto r = at::_batch_norm_with_update(*x, *gamma, *beta, *running_mean, *running_var, momentum, eps);
        out[0] = new at::Tensor(std::get<0>(r));
        out[1] = new at::Tensor(std::get<1>(r));
        out[2] = new at::Tensor(std::get<2>(r));
        out[3] = new at::Tensor(std::get<3>(r));
        return 0;
    } catch (const std::exception& e) {
        g_last_error = e.what();
        return -1;
    }
}

// dx, dgamma, dbeta of the training-mode batch norm above. out = {dx, dgamma, dbeta}. Returns 0, or -1.
int gan_torch_batch_norm_backward(const at::Tensor* dy, const at::Tensor* x, const at::Tensor* gamma,
                                  const at::Tensor* running_mean, const at::Tensor* running_var,
                                  const at::Tensor* save_mean, const at::Tensor* save_var,
                                  const at::Tensor* reserve, double eps, at::Tensor** out) {
    try {
        auto r = at::batch_norm_backward(*dy, *x, *gamma, *running_mean, *running_var, *save_mean, *save_var,
                                         /*update=*/true, eps, {true, true, true}, *reserve);
        out[0] = new at::Tensor(std::get<0>(r));
        out[1] = new at::Tensor(std::get<1>(r));
        out[2] = new at::Tensor(std::get<2>(r));
        return 0;
    } catch (const std::exception& e) {
        g_last_error = e.what();
        return -1;
    }
}

// nn.LeakyReLU(slope) (out of place).
at::Tensor* gan_torch_leaky_relu(const at::Tensor* x, double slope) {
    return guarded([&] { return at::leaky_relu(*x, slope); });
}

}  // extern "C"
