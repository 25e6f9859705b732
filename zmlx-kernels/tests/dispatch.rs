//! The fused token-to-expert dispatch gives exactly the reference's permutation and
//! inverse (MLX's argsort is stable, and so is the counting sort).

use mlx::{random, Device, Dtype};
use proptest::prelude::*;
use zmlx_kernels::dispatch::{fused_dispatch, reference_dispatch};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    #[test]
    fn fused_equals_reference(seed in 0u64..1000, tokens in 1i32..600, k in 1i32..17, experts in 8i32..513) {
        let key = random::key(seed).unwrap();
        let idx = random::randint(0, experts, &[tokens, k], Dtype::Uint32, Some(&key), ()).unwrap();
        let s = Device::cpu().into();
        let r = reference_dispatch(&idx, s).unwrap();
        let f = fused_dispatch(&idx, experts as usize, s).unwrap();
        prop_assert_eq!(f.order.to_vec::<u32>().unwrap(), r.order.to_vec::<u32>().unwrap());
        prop_assert_eq!(f.inverse.to_vec::<u32>().unwrap(), r.inverse.to_vec::<u32>().unwrap());
    }
}

#[test]
fn out_of_range_experts_are_an_error_not_a_crash() {
    let idx = mlx::Array::from_slice(&[0u32, 9, 3], &[1, 3]).unwrap();
    let d = fused_dispatch(&idx, 4, Device::cpu().into()).unwrap();
    assert!(d.order.eval().is_err());
    let wrong = mlx::Array::from_slice(&[0i32, 1], &[1, 2]).unwrap();
    assert!(fused_dispatch(&wrong, 4, Device::cpu().into()).is_err());
}
