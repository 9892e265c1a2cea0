//! Exponential moving average of tensors, in place: the generator average of `train --g-ema` (Yazıcı et al.
//! 2019, "The Unusual Effectiveness of Averaging in GAN Training"; StyleGAN and BigGAN sample from such an average).

use anyhow::Result;
use rayon::prelude::*;

use super::elementwise::PAR_CHUNK;
use super::{data, data_mut};
use crate::backend::{check_ema, ema_one_minus};
use crate::tensor::Tensor;

pub fn ema_(avgs: &mut [&mut Tensor], xs: &[&Tensor], decay: f32) -> Result<()> {
    check_ema(avgs, xs, decay)?;
    for (a, x) in avgs.iter().zip(xs) {
        data(a)?;
        data(x)?;
    }
    let omd = ema_one_minus(decay);
    for (a, x) in avgs.iter_mut().zip(xs) {
        let x = data(x)?;
        data_mut(a)?
            .par_chunks_mut(PAR_CHUNK)
            .zip(x.par_chunks(PAR_CHUNK))
            .for_each(|(a, x)| {
                for (a, &x) in a.iter_mut().zip(x) {
                    *a = decay * *a + omd * x;
                }
            });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::Device;

    fn t(v: &[f32]) -> Tensor {
        Tensor::from_vec(v.to_vec(), &[v.len()], &Device::Cpu).unwrap()
    }

    #[test]
    fn averages_in_place_and_checks_before_writing() {
        let mut a = t(&[1.0, 2.0, -4.0]);
        let shared = a.clone();
        let x = t(&[3.0, 2.0, 0.0]);
        ema_(&mut [&mut a], &[&x], 0.75).unwrap();
        assert_eq!(a.to_vec().unwrap(), vec![1.5, 2.0, -3.0]);
        // Copy-on-write: a clone taken before the update keeps its values.
        assert_eq!(shared.to_vec().unwrap(), vec![1.0, 2.0, -4.0]);
        // decay 0 copies, decay 1 keeps.
        ema_(&mut [&mut a], &[&x], 1.0).unwrap();
        assert_eq!(a.to_vec().unwrap(), vec![1.5, 2.0, -3.0]);
        ema_(&mut [&mut a], &[&x], 0.0).unwrap();
        assert_eq!(a.to_vec().unwrap(), vec![3.0, 2.0, 0.0]);
        // Bad arguments: an error, and nothing written (the first pair is fine, the second is not).
        let mut b = t(&[7.0, 7.0, 7.0]);
        let short = t(&[1.0]);
        assert!(ema_(&mut [&mut b], &[&x], 1.5).is_err());
        assert!(ema_(&mut [&mut b], &[&x], f32::NAN).is_err());
        assert!(ema_(&mut [&mut b], &[], 0.5).is_err());
        let mut c = t(&[0.0]);
        assert!(ema_(&mut [&mut b, &mut c], &[&x, &x], 0.5).is_err());
        assert!(ema_(&mut [&mut b], &[&short], 0.5).is_err());
        assert_eq!(b.to_vec().unwrap(), vec![7.0, 7.0, 7.0]);
    }
}
