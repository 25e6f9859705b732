//! Host <-> MLX round trips for every element type (bit-exact, every f16 and bf16
//! bit pattern including NaN payloads and subnormals), `item`, and the printed form.

use half::{bf16, f16};
use mlx::{ops, Array, Dtype, Element};

fn round_trip<T: Element + PartialEq + std::fmt::Debug>(data: &[T]) {
    let a = Array::from_slice(data, &[data.len() as i32]).unwrap();
    assert_eq!(a.dtype(), T::DTYPE);
    assert_eq!(a.size(), data.len());
    assert_eq!(a.nbytes(), data.len() * T::DTYPE.size());
    assert_eq!(a.to_vec::<T>().unwrap(), data, "{:?}", T::DTYPE);
    // A copy made by MLX (an evaluated graph node, not the host buffer) too.
    assert_eq!(ops::copy(&a, ()).unwrap().to_vec::<T>().unwrap(), data);
    assert_eq!(
        a.take(&Array::scalar(0u32).unwrap(), None)
            .unwrap()
            .item::<T>()
            .unwrap(),
        data[0]
    );
}

#[test]
fn every_element_type_round_trips() {
    round_trip(&[false, true, true, false]);
    round_trip(&[0u8, 1, 127, 128, 255]);
    round_trip(&[0u16, 1, 0x7fff, 0x8000, u16::MAX]);
    round_trip(&[0u32, 1, 0x7fff_ffff, 0x8000_0000, u32::MAX]);
    round_trip(&[0u64, 1, u64::MAX / 3, u64::MAX]);
    round_trip(&[0i8, -1, i8::MIN, i8::MAX]);
    round_trip(&[0i16, -1, i16::MIN, i16::MAX]);
    round_trip(&[0i32, -1, i32::MIN, i32::MAX]);
    round_trip(&[0i64, -1, i64::MIN, i64::MAX]);
    round_trip(&[0.0f64, -0.0, 1e-310, f64::MAX, f64::INFINITY, -1.5]);
    // f32 compared bitwise (NaN != NaN): signed zero, subnormal, inf, NaN payloads.
    let f: Vec<f32> = [
        0u32,
        0x8000_0000,
        1,
        0x7f80_0000,
        0xff80_0000,
        0x7fc0_0001,
        0x7f80_0001,
        0x3f80_0000,
    ]
    .iter()
    .map(|&b| f32::from_bits(b))
    .collect();
    let a = Array::from_slice(&f, &[f.len() as i32]).unwrap();
    let back: Vec<u32> = a
        .to_vec::<f32>()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect();
    assert_eq!(back, f.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
}

#[test]
fn every_f16_and_bf16_bit_pattern_round_trips() {
    let h: Vec<f16> = (0..=u16::MAX).map(f16::from_bits).collect();
    let a = Array::from_slice(&h, &[256, 256]).unwrap();
    let back: Vec<u16> = a
        .to_vec::<f16>()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect();
    assert!(
        back.iter().enumerate().all(|(i, &b)| b == i as u16),
        "f16 bits changed"
    );
    let b: Vec<bf16> = (0..=u16::MAX).map(bf16::from_bits).collect();
    let a = Array::from_slice(&b, &[65536]).unwrap();
    let back: Vec<u16> = a
        .to_vec::<bf16>()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect();
    assert!(
        back.iter().enumerate().all(|(i, &b)| b == i as u16),
        "bf16 bits changed"
    );
    // The non-NaN values survive a trip through f32 inside MLX unchanged
    // (widening is exact; narrowing an exact value is exact).
    let finite: Vec<f16> = h.iter().copied().filter(|v| !v.is_nan()).collect();
    let a = Array::from_slice(&finite, &[finite.len() as i32]).unwrap();
    let via = a
        .astype(Dtype::Float32)
        .unwrap()
        .astype(Dtype::Float16)
        .unwrap();
    assert_eq!(
        via.to_vec::<f16>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect::<Vec<_>>(),
        finite.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    let wide = a.astype(Dtype::Float32).unwrap().to_vec::<f32>().unwrap();
    assert_eq!(wide, finite.iter().map(|v| v.to_f32()).collect::<Vec<_>>());
}

#[test]
fn scalars_and_item() {
    assert_eq!(Array::scalar(7i32).unwrap().item::<i32>().unwrap(), 7);
    assert!(Array::scalar(true).unwrap().item::<bool>().unwrap());
    assert_eq!(
        Array::scalar(f16::from_f32(0.5))
            .unwrap()
            .item::<f16>()
            .unwrap(),
        f16::from_f32(0.5)
    );
    assert_eq!(
        Array::scalar(bf16::from_f32(-2.0))
            .unwrap()
            .item::<bf16>()
            .unwrap(),
        bf16::from_f32(-2.0)
    );
    assert_eq!(
        Array::scalar(u64::MAX).unwrap().item::<u64>().unwrap(),
        u64::MAX
    );
    let s = Array::scalar(1.5f32).unwrap();
    assert_eq!(s.ndim(), 0);
    assert_eq!(s.shape(), &[] as &[i32]);
    assert_eq!(s.size(), 1);
    // A one-element array of any rank has an item.
    assert_eq!(
        Array::from_slice(&[3u8], &[1, 1, 1])
            .unwrap()
            .item::<u8>()
            .unwrap(),
        3
    );
    // scalar_as converts to the requested dtype.
    for d in [
        Dtype::Float16,
        Dtype::Bfloat16,
        Dtype::Float32,
        Dtype::Int32,
        Dtype::Uint8,
    ] {
        let s = Array::scalar_as(3.0, d).unwrap();
        assert_eq!(s.dtype(), d);
        assert_eq!(
            s.astype(Dtype::Float32).unwrap().item::<f32>().unwrap(),
            3.0
        );
    }
    // Empty arrays round trip too.
    let e = Array::from_slice::<f32>(&[], &[0, 3]).unwrap();
    assert_eq!(e.size(), 0);
    assert_eq!(e.to_vec::<f32>().unwrap(), Vec::<f32>::new());
}

#[test]
fn dtype_codes_and_sizes() {
    for (i, d) in Dtype::ALL.iter().enumerate() {
        assert_eq!(d.code(), i as i32);
        assert_eq!(Dtype::from_code(d.code()), Some(*d));
        // MLX agrees on the size of one element of each dtype.
        let a = ops::zeros(&[3], *d, ()).unwrap();
        assert_eq!(a.dtype(), *d);
        assert_eq!(a.nbytes(), 3 * d.size(), "{d:?}");
    }
    assert_eq!(Dtype::from_code(14), None);
    assert_eq!(Dtype::from_code(-1), None);
}

#[test]
fn display_and_debug_print_mlx_form() {
    let a = Array::from_slice(&[1i32, 2, 3], &[3]).unwrap();
    assert_eq!(a.to_string(), "array([1, 2, 3], dtype=int32)");
    let b = Array::from_slice(&[1.0f32, 2.5, -3.0, 4.0], &[2, 2]).unwrap();
    assert_eq!(
        b.to_string(),
        "array([[1, 2.5],\n       [-3, 4]], dtype=float32)"
    );
    assert_eq!(format!("{b:?}"), b.to_string());
    assert_eq!(
        Array::scalar(true).unwrap().to_string(),
        "array(true, dtype=bool)"
    );
    assert_eq!(
        Array::from_slice(&[f16::from_f32(1.5)], &[1])
            .unwrap()
            .to_string(),
        "array([1.5], dtype=float16)"
    );
    assert_eq!(
        Array::from_slice(&[bf16::from_f32(1.5)], &[1])
            .unwrap()
            .to_string(),
        "array([1.5], dtype=bfloat16)"
    );
    // Printing evaluates a lazy array.
    let lazy = b.add(&b).unwrap();
    assert_eq!(
        lazy.to_string(),
        "array([[2, 5],\n       [-6, 8]], dtype=float32)"
    );
}
