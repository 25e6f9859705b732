//! Counting-sort dispatch against a stable sort.

use proptest::prelude::*;
use zmlx_kernels::cpu::{dispatch_into, ExpertDispatch};

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn dispatch_is_a_stable_sort(experts in 1usize..600, raw in prop::collection::vec(any::<u32>(), 0..400)) {
        let indices: Vec<u32> = raw.iter().map(|v| v % experts as u32).collect();
        let d = ExpertDispatch::new(&indices, experts).unwrap();
        let mut want: Vec<u32> = (0..indices.len() as u32).collect();
        want.sort_by_key(|&p| indices[p as usize]); // stable
        prop_assert_eq!(d.order(), &want[..]);
        for (pos, &p) in d.order().iter().enumerate() {
            prop_assert_eq!(d.inverse()[p as usize] as usize, pos);
        }
        prop_assert_eq!(d.offsets().len(), experts + 1);
        for e in 0..experts {
            let n = indices.iter().filter(|&&i| i as usize == e).count();
            prop_assert_eq!(d.count(e), n);
            prop_assert!(d.pairs(e).iter().all(|&p| indices[p as usize] as usize == e));
        }
        let (mut o, mut i, mut f) = (vec![0; indices.len()], vec![0; indices.len()], vec![0; experts + 1]);
        dispatch_into(&indices, experts, &mut o, &mut i, &mut f).unwrap();
        prop_assert_eq!(&o[..], d.order());
        prop_assert_eq!(&i[..], d.inverse());
        prop_assert_eq!(&f[..], d.offsets());
    }
}
