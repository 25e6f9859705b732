//! Contract violations come back as typed errors, never panics.

use half::bf16;
use zmlx_kernels::cpu::{
    expert_down_combine, expert_swiglu, qmm, route, simd, ExpertDispatch, Floats, FloatsMut,
    Gating, KernelError, QuantSpec, WeightShape, Weights,
};

#[test]
fn unsupported_quantization() {
    for bits in [0, 1, 3, 5, 6, 7, 16] {
        assert_eq!(
            QuantSpec::new(bits, 64),
            Err(KernelError::UnsupportedBits { bits })
        );
    }
    for gs in [0, 16, 48, 256] {
        assert_eq!(
            QuantSpec::new(4, gs),
            Err(KernelError::UnsupportedGroupSize { group_size: gs })
        );
    }
    let spec = QuantSpec::new(4, 64).unwrap();
    let s = [0.0f32; 2];
    let r = Weights::quantized(
        &[0; 12],
        Floats::F32(&s),
        Floats::F32(&s),
        WeightShape::matrix(1, 96),
        spec,
    );
    assert!(matches!(
        r,
        Err(KernelError::ColsNotGrouped {
            cols: 96,
            group_size: 64
        })
    ));
}

#[test]
fn wrong_lengths_and_dtypes() {
    let spec = QuantSpec::new(4, 32).unwrap();
    let s = [0.0f32; 4];
    let shape = WeightShape::matrix(2, 64);
    assert!(matches!(
        Weights::quantized(&[0; 15], Floats::F32(&s), Floats::F32(&s), shape, spec),
        Err(KernelError::LengthMismatch { what: "packed", .. })
    ));
    let sb = [bf16::ZERO; 4];
    assert!(matches!(
        Weights::quantized(&[0; 16], Floats::F32(&s), Floats::Bf16(&sb), shape, spec),
        Err(KernelError::DtypeMismatch { .. })
    ));
    let w = Weights::quantized(&[0; 16], Floats::F32(&s), Floats::F32(&s), shape, spec).unwrap();
    let x = [0.0f32; 64];
    let mut y = [0.0f32; 2];
    let mut yb = [bf16::ZERO; 2];
    assert!(matches!(
        qmm(Floats::F32(&x[..63]), 1, &w, FloatsMut::F32(&mut y)),
        Err(KernelError::LengthMismatch { what: "x", .. })
    ));
    assert!(matches!(
        qmm(Floats::F32(&x), 1, &w, FloatsMut::Bf16(&mut yb)),
        Err(KernelError::DtypeMismatch { .. })
    ));
    let xb = [bf16::ZERO; 64];
    assert!(matches!(
        qmm(Floats::Bf16(&xb), 1, &w, FloatsMut::Bf16(&mut yb)),
        Err(KernelError::DtypeMismatch {
            what: "weights",
            ..
        })
    ));
    assert!(matches!(
        qmm(Floats::F32(&x), usize::MAX, &w, FloatsMut::F32(&mut y)),
        Err(KernelError::Overflow { .. })
    ));
}

#[test]
fn expert_index_out_of_range() {
    let shape = WeightShape::stacked(4, 2, 8);
    let data = [0.0f32; 64];
    let w = Weights::float(Floats::F32(&data), shape).unwrap();
    let x = [0.0f32; 8];
    let mut h = [0.0f32; 4];
    let err = expert_swiglu(
        Floats::F32(&x),
        1,
        &[1, 4],
        2,
        &w,
        &w,
        FloatsMut::F32(&mut h),
    );
    assert!(matches!(
        err,
        Err(KernelError::ExpertOutOfRange {
            index: 4,
            experts: 4,
            ..
        })
    ));
    let hin = [0.0f32; 4];
    let wd_data = [0.0f32; 4 * 8 * 2];
    let wd = Weights::float(Floats::F32(&wd_data), WeightShape::stacked(4, 8, 2)).unwrap();
    let mut y = [0.0f32; 8];
    let err = expert_down_combine(
        Floats::F32(&hin),
        1,
        &[0, 9],
        2,
        Floats::F32(&[0.5, 0.5]),
        &wd,
        FloatsMut::F32(&mut y),
    );
    assert!(matches!(
        err,
        Err(KernelError::ExpertOutOfRange { index: 9, .. })
    ));
    assert!(matches!(
        ExpertDispatch::new(&[3, 1], 2),
        Err(KernelError::ExpertOutOfRange { index: 3, .. })
    ));
}

#[test]
fn down_scores_dtype() {
    let hin = [bf16::ZERO; 4];
    let wd_data = [bf16::ZERO; 4 * 8 * 2];
    let wd = Weights::float(Floats::Bf16(&wd_data), WeightShape::stacked(4, 8, 2)).unwrap();
    let mut y = [bf16::ZERO; 8];
    let scores = [half::f16::ZERO; 2];
    let err = expert_down_combine(
        Floats::Bf16(&hin),
        1,
        &[0, 1],
        2,
        Floats::F16(&scores),
        &wd,
        FloatsMut::Bf16(&mut y),
    );
    assert!(matches!(
        err,
        Err(KernelError::DtypeMismatch { what: "scores", .. })
    ));
}

#[test]
fn gating_arguments() {
    let logits = [0.0f32; 12];
    let mut idx = [0u32; 4];
    let mut w = [0.0f32; 4];
    let g = Gating::SoftmaxTopK {
        top_k: 4,
        renormalize: false,
    };
    assert!(matches!(
        route(
            Floats::F32(&logits),
            4,
            3,
            &g,
            &mut idx,
            FloatsMut::F32(&mut w)
        ),
        Err(KernelError::LengthMismatch { .. })
    ));
    assert!(matches!(
        route(
            Floats::F32(&logits),
            1,
            12,
            &Gating::TopKSoftmax { top_k: 13 },
            &mut [0; 13],
            FloatsMut::F32(&mut [0.0; 13])
        ),
        Err(KernelError::InvalidArgument { .. })
    ));
    let bad_groups = [(5, 1), (12, 1), (4, 0), (4, 5)];
    for (n_group, topk_group) in bad_groups {
        let g = Gating::SigmoidGroupTopK {
            top_k: 2,
            n_group,
            topk_group,
            renormalize: true,
            routed_scaling_factor: 1.0,
            correction_bias: None,
        };
        assert!(
            matches!(
                route(
                    Floats::F32(&logits),
                    1,
                    12,
                    &g,
                    &mut idx[..2],
                    FloatsMut::F32(&mut w[..2])
                ),
                Err(KernelError::InvalidArgument { .. })
            ),
            "n_group {n_group} topk_group {topk_group}"
        );
    }
    let mut wb = [bf16::ZERO; 2];
    let lf = [half::f16::ZERO; 12];
    assert!(matches!(
        route(
            Floats::F16(&lf),
            1,
            12,
            &Gating::TopKSoftmax { top_k: 2 },
            &mut idx[..2],
            FloatsMut::Bf16(&mut wb)
        ),
        Err(KernelError::DtypeMismatch { .. })
    ));
}

#[test]
fn unavailable_simd_level_is_an_error() {
    for level in [
        simd::SimdLevel::Avx2,
        simd::SimdLevel::Avx512,
        simd::SimdLevel::Neon,
    ] {
        if !level.is_available() {
            assert!(simd::with_level(level, || ()).is_err());
        }
    }
    assert!(simd::with_level(simd::SimdLevel::Portable, || ()).is_ok());
    assert!(simd::available_levels().contains(&simd::SimdLevel::Portable));
}
