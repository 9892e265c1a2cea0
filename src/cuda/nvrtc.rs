//! NVRTC compilation of kernels/*.cu with an on-disk cache. (being written)
