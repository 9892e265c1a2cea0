//! The libtorch side of the benchmarks (feature `libtorch`): devices, tensors copied from ours, the ATen ops
//! tch does not bind (through `torch_shim.cpp`), and DCGAN built with `tch::nn` from the same layer table as
//! ours, trained step for step the way `gan_engine::train::Gan` does it.

use std::ffi::CStr;
use std::os::raw::{c_char, c_int};
use std::sync::Once;
use std::time::Instant;

use criterion::Bencher;
use tch::nn::{self, ModuleT, OptimizerConfig};
use tch::{Kind, Reduction, Tensor};
use torch_sys::C_tensor;

use super::dcgan::Dcgan;
use super::Ours;

extern "C" {
    fn gan_torch_last_error() -> *const c_char;
    fn gan_torch_conv_backward(
        dy: *const C_tensor,
        x: *const C_tensor,
        w: *const C_tensor,
        stride: i64,
        padding: i64,
        transposed: c_int,
        which: c_int,
    ) -> *mut C_tensor;
    fn gan_torch_batch_norm_train(
        x: *const C_tensor,
        gamma: *const C_tensor,
        beta: *const C_tensor,
        running_mean: *mut C_tensor,
        running_var: *mut C_tensor,
        momentum: f64,
        eps: f64,
        out: *mut *mut C_tensor,
    ) -> c_int;
    #[allow(clippy::too_many_arguments)]
    fn gan_torch_batch_norm_backward(
        dy: *const C_tensor,
        x: *const C_tensor,
        gamma: *const C_tensor,
        running_mean: *const C_tensor,
        running_var: *const C_tensor,
        save_mean: *const C_tensor,
        save_var: *const C_tensor,
        reserve: *const C_tensor,
        eps: f64,
        out: *mut *mut C_tensor,
    ) -> c_int;
    fn gan_torch_leaky_relu(x: *const C_tensor, slope: f64) -> *mut C_tensor;
}

fn shim_error(what: &str) -> ! {
    // SAFETY: the shim returns a pointer to its thread-local, NUL-terminated message.
    let msg = unsafe { CStr::from_ptr(gan_torch_last_error()) };
    panic!("libtorch {what}: {}", msg.to_string_lossy())
}

/// Takes ownership of a tensor the shim allocated.
fn owned(p: *mut C_tensor, what: &str) -> Tensor {
    if p.is_null() {
        shim_error(what);
    }
    // SAFETY: a non-null result is a fresh heap `at::Tensor` that nobody else owns.
    unsafe { Tensor::from_ptr(p) }
}

/// One gradient of a bias-free 2-D convolution, exactly as autograd's ConvolutionBackward0 computes it:
/// `which` 0 is the input gradient, 1 the weight gradient. `transposed` for ConvTranspose2d.
pub fn conv_backward(
    dy: &Tensor,
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    pad: usize,
    transposed: bool,
    which: usize,
) -> Tensor {
    // SAFETY: the pointers are live tch tensors; the shim only reads them.
    let p = unsafe {
        gan_torch_conv_backward(
            dy.as_ptr(),
            x.as_ptr(),
            w.as_ptr(),
            stride as i64,
            pad as i64,
            transposed as c_int,
            which as c_int,
        )
    };
    owned(p, "convolution_backward")
}

/// nn.BatchNorm2d's training forward: (y, save_mean, save_var, reserve); updates the running stats.
pub fn batch_norm_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    running_mean: &mut Tensor,
    running_var: &mut Tensor,
    momentum: f64,
    eps: f64,
) -> [Tensor; 4] {
    let mut out = [std::ptr::null_mut(); 4];
    // SAFETY: live tensors; the running stats are updated in place through their own handles.
    let rc = unsafe {
        gan_torch_batch_norm_train(
            x.as_ptr(),
            gamma.as_ptr(),
            beta.as_ptr(),
            running_mean.as_mut_ptr(),
            running_var.as_mut_ptr(),
            momentum,
            eps,
            out.as_mut_ptr(),
        )
    };
    if rc != 0 {
        shim_error("_batch_norm_with_update");
    }
    out.map(|p| owned(p, "_batch_norm_with_update"))
}

/// (dx, dgamma, dbeta) of [`batch_norm_train`], as autograd computes them.
pub fn batch_norm_backward(
    dy: &Tensor,
    x: &Tensor,
    gamma: &Tensor,
    running: (&Tensor, &Tensor),
    saved: &[Tensor; 4],
    eps: f64,
) -> [Tensor; 3] {
    let mut out = [std::ptr::null_mut(); 3];
    // SAFETY: live tensors, read only.
    let rc = unsafe {
        gan_torch_batch_norm_backward(
            dy.as_ptr(),
            x.as_ptr(),
            gamma.as_ptr(),
            running.0.as_ptr(),
            running.1.as_ptr(),
            saved[1].as_ptr(),
            saved[2].as_ptr(),
            saved[3].as_ptr(),
            eps,
            out.as_mut_ptr(),
        )
    };
    if rc != 0 {
        shim_error("batch_norm_backward");
    }
    out.map(|p| owned(p, "batch_norm_backward"))
}

/// nn.LeakyReLU(slope): one ATen kernel, recorded by autograd.
pub fn leaky_relu(x: &Tensor, slope: f64) -> Tensor {
    // SAFETY: live tensor, read only.
    owned(
        unsafe { gan_torch_leaky_relu(x.as_ptr(), slope) },
        "leaky_relu",
    )
}

/// libtorch's device for a group whose "ours" runs on `ours`; None (with a line saying why) when libtorch cannot
/// run there.
pub fn device_for(ours: &Ours) -> Option<tch::Device> {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        // Same thread count as our rayon pool; cuDNN autotuning on, as PyTorch's DCGAN example sets it.
        tch::set_num_threads(rayon::current_num_threads() as i32);
        tch::Cuda::cudnn_set_benchmark(true);
        tch::manual_seed(0);
    });
    match &ours.cuda {
        None => Some(tch::Device::Cpu),
        Some(be) if be.is_emulated() => None,
        Some(_) if tch::Cuda::is_available() => Some(tch::Device::Cuda(0)),
        Some(_) => {
            static SAID: Once = Once::new();
            SAID.call_once(|| {
                eprintln!(
                    "gan-engine bench: libtorch sees no CUDA device; CUDA groups run ours only"
                )
            });
            None
        }
    }
}

/// Times `f` on libtorch's `dev`; on CUDA the clock stops once the device has drained its queue.
pub fn time<R>(dev: tch::Device, b: &mut Bencher, mut f: impl FnMut() -> R) {
    match dev {
        tch::Device::Cuda(i) => b.iter_custom(|iters| {
            tch::Cuda::synchronize(i as i64);
            let t = Instant::now();
            for _ in 0..iters {
                std::hint::black_box(f());
            }
            tch::Cuda::synchronize(i as i64);
            t.elapsed()
        }),
        _ => b.iter(f),
    }
}

/// A copy of one of our tensors on `dev`.
pub fn from_ours(t: &gan_engine::Tensor, dev: tch::Device) -> Tensor {
    let shape: Vec<i64> = t.shape().iter().map(|&d| d as i64).collect();
    Tensor::from_slice(&t.to_vec().expect("tensor to host"))
        .reshape(&shape)
        .to_device(dev)
}

/// DCGAN's models in tch, layer for layer from the same table as ours: G = ConvT BN ReLU ... ConvT Tanh,
/// D = Conv LReLU(0.2), Conv BN LReLU ..., Conv → logits. Weights N(0, 0.02), BN γ N(1, 0.02), β 0 (the DCGAN
/// init), no biases, BN momentum 0.1, eps 1e-5.
pub struct TorchDcgan {
    pub g_vs: nn::VarStore,
    pub d_vs: nn::VarStore,
    pub g: nn::SequentialT,
    pub d: nn::SequentialT,
}

fn bn(p: nn::Path, c: usize) -> nn::BatchNorm {
    let cfg = nn::BatchNormConfig {
        ws_init: nn::Init::Randn {
            mean: 1.0,
            stdev: 0.02,
        },
        bs_init: nn::Init::Const(0.0),
        ..Default::default()
    };
    nn::batch_norm2d(p, c as i64, cfg)
}

const W_INIT: nn::Init = nn::Init::Randn {
    mean: 0.0,
    stdev: 0.02,
};

impl TorchDcgan {
    pub fn new(arch: &Dcgan, dev: tch::Device) -> TorchDcgan {
        let g_vs = nn::VarStore::new(dev);
        let d_vs = nn::VarStore::new(dev);
        let mut g = nn::seq_t();
        let root = g_vs.root();
        let last = arch.g.len() - 1;
        for (i, l) in arch.g.iter().enumerate() {
            let cfg = nn::ConvTransposeConfig {
                stride: l.stride as i64,
                padding: l.pad as i64,
                bias: false,
                ws_init: W_INIT,
                ..Default::default()
            };
            let [cin, cout, k, _] = l.w.map(|d| d as i64);
            g = g.add(nn::conv_transpose2d(&root / i, cin, cout, k, cfg));
            if i < last {
                g = g
                    .add(bn(&root / format!("bn{i}"), l.y[1]))
                    .add_fn(|x| x.relu());
            } else {
                g = g.add_fn(|x| x.tanh());
            }
        }
        let mut d = nn::seq_t();
        let root = d_vs.root();
        let last = arch.d.len() - 1;
        for (i, l) in arch.d.iter().enumerate() {
            let cfg = nn::ConvConfig {
                stride: l.stride as i64,
                padding: l.pad as i64,
                bias: false,
                ws_init: W_INIT,
                ..Default::default()
            };
            let [cout, cin, k, _] = l.w.map(|d| d as i64);
            d = d.add(nn::conv2d(&root / i, cin, cout, k, cfg));
            if i > 0 && i < last {
                d = d.add(bn(&root / format!("bn{i}"), l.y[1]));
            }
            if i < last {
                d = d.add_fn(|x| leaky_relu(x, 0.2));
            }
        }
        TorchDcgan { g_vs, d_vs, g, d }
    }
}

fn adam(vs: &nn::VarStore) -> nn::Optimizer {
    nn::Adam {
        beta1: 0.5,
        beta2: 0.999,
        wd: 0.0,
        eps: 1e-8,
        amsgrad: false,
    }
    .build(vs, 2e-4)
    .expect("Adam")
}

/// One GAN iteration in libtorch, the same computation as `gan_engine::train::Gan::train_step` with k = 1:
/// D on a real batch (BCE against 1) and on G(z) detached (BCE against 0), one backward through the sum, Adam on
/// D; then D frozen (no weight gradients), D(G(z)) against 1, backward into G, Adam on G. The losses and mean
/// probabilities are read back to the host, as our step does for its metrics.
pub struct TorchGan {
    pub net: TorchDcgan,
    opt_g: nn::Optimizer,
    opt_d: nn::Optimizer,
    real: Tensor,
    ones: Tensor,
    zeros: Tensor,
    nz: i64,
}

impl TorchGan {
    pub fn new(arch: &Dcgan, real: Tensor) -> TorchGan {
        let dev = real.device();
        let net = TorchDcgan::new(arch, dev);
        let n = real.size()[0];
        TorchGan {
            opt_g: adam(&net.g_vs),
            opt_d: adam(&net.d_vs),
            net,
            real,
            ones: Tensor::ones([n], (Kind::Float, dev)),
            zeros: Tensor::zeros([n], (Kind::Float, dev)),
            nz: arch.g[0].x[1] as i64,
        }
    }

    pub fn step(&mut self) -> [f64; 5] {
        let n = self.real.size()[0];
        let dev = self.real.device();
        let bce = |logits: &Tensor, target: &Tensor| {
            logits.binary_cross_entropy_with_logits::<Tensor>(target, None, None, Reduction::Mean)
        };
        let prob =
            |logits: &Tensor| tch::no_grad(|| logits.sigmoid().mean(Kind::Float).double_value(&[]));

        self.opt_d.zero_grad();
        let logits_real = self.net.d.forward_t(&self.real, true).view([-1]);
        let err_real = bce(&logits_real, &self.ones);
        let z = Tensor::randn([n, self.nz, 1, 1], (Kind::Float, dev));
        let fake = self.net.g.forward_t(&z, true);
        let logits_fake = self.net.d.forward_t(&fake.detach(), true).view([-1]);
        let err_fake = bce(&logits_fake, &self.zeros);
        let err_d = &err_real + &err_fake;
        let loss_d = err_d.double_value(&[]);
        let (d_x, d_g_z1) = (prob(&logits_real), prob(&logits_fake));
        err_d.backward();
        self.opt_d.step();

        self.opt_g.zero_grad();
        self.net.d_vs.freeze();
        let logits = self.net.d.forward_t(&fake, true).view([-1]);
        let err_g = bce(&logits, &self.ones);
        let loss_g = err_g.double_value(&[]);
        let d_g_z2 = prob(&logits);
        err_g.backward();
        self.net.d_vs.unfreeze();
        self.opt_g.step();
        [loss_d, loss_g, d_x, d_g_z1, d_g_z2]
    }
}

/// Adam (DCGAN's settings) over tensors of the given shapes, with gradients already in place: times libtorch's
/// optimizer step alone.
pub fn adam_over(shapes: &[Vec<usize>], dev: tch::Device) -> (nn::VarStore, nn::Optimizer) {
    let vs = nn::VarStore::new(dev);
    let root = vs.root();
    let vars: Vec<Tensor> = shapes
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let s: Vec<i64> = s.iter().map(|&d| d as i64).collect();
            root.var(&format!("p{i}"), &s, W_INIT)
        })
        .collect();
    let opt = adam(&vs);
    // Gradients: d/dp of Σ p·r for a random r is r, so every parameter gets a random gradient.
    let loss = vars
        .iter()
        .map(|v| (v * v.randn_like()).sum(Kind::Float))
        .fold(Tensor::zeros([], (Kind::Float, dev)), |a, b| a + b);
    loss.backward();
    (vs, opt)
}
