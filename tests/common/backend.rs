//! The CUDA backend under test, for the tests that drive it directly.

use std::sync::Arc;

use gan_engine::cuda::CudaBackend;

/// The emulated CUDA backend, or cuda:0 with GAN_ENGINE_TEST_DEVICE=cuda; either poisons fresh outputs with NaN.
pub fn under_test() -> Arc<CudaBackend> {
    std::env::set_var("GAN_ENGINE_POISON", "1");
    match std::env::var("GAN_ENGINE_TEST_DEVICE").as_deref() {
        Ok("cuda") => gan_engine::cuda::cuda_backend(0)
            .expect("GAN_ENGINE_TEST_DEVICE=cuda but cuda:0 does not open"),
        _ => gan_engine::cuda::emulated_backend().expect("the emulated CUDA backend must open"),
    }
}

/// How many times `kernel` has been launched on `be`.
pub fn launches(be: &CudaBackend, kernel: &str) -> u64 {
    let counts = be.runtime().launch_counts();
    counts.iter().find(|(k, _)| *k == kernel).map_or(0, |c| c.1)
}
