//! The CPU backend's fused rotary embedding (rope.rs) against the composition of tensor
//! operations it replaces: outputs and the gradient of the input, at positions inside and past
//! the precomputed table.

use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use burn::tensor::Distribution;
use shear_model::rope::{rotate, Rotary};
use shear_model::{RopeConfig, RopeScaling};
use shear_testkit::max_abs_diff;

type AD = Autodiff<Flex>;

#[test]
fn fused_rotation_matches_the_composition_and_its_gradient() {
    let dev = Default::default();
    assert!(shear_model::fused_kernels::<AD>() && shear_model::fused_kernels::<Flex>());
    let (b, s, h, d) = (3, 37, 4, 16);
    let rope = Rotary::<AD>::new(
        d,
        &RopeConfig {
            theta: 10000.0,
            scaling: RopeScaling::None,
        },
        64,
        &dev,
    );
    for start in [0, 5, 60] {
        // 60 + 37 runs past the 64-position table: computed on demand.
        let x0 = Tensor::<Flex, 4>::random([b, s, h, d], Distribution::Normal(0.0, 1.0), &dev);
        let r = Tensor::<Flex, 4>::random([b, s, h, d], Distribution::Normal(0.0, 1.0), &dev);
        let run = |fused: bool| {
            let x = Tensor::<AD, 4>::from_inner(x0.clone()).require_grad();
            let y = if fused {
                rope.apply(x.clone(), start)
            } else {
                let (cos, sin) = rope.cos_sin(start, s, &dev);
                rotate(x.clone(), cos, sin)
            };
            // A random upstream gradient: d(sum(y ⊙ r))/dy = r.
            let g = (y.clone() * Tensor::from_inner(r.clone())).sum().backward();
            let y: Vec<f32> = y.inner().into_data().to_vec().unwrap();
            let dx: Vec<f32> = x.grad(&g).unwrap().into_data().to_vec().unwrap();
            (y, dx)
        };
        let ((y, dx), (y_ref, dx_ref)) = (run(true), run(false));
        let (dy, dg) = (max_abs_diff(&y, &y_ref), max_abs_diff(&dx, &dx_ref));
        eprintln!("start {start}: |y| diff {dy:e}, |dx| diff {dg:e}");
        assert!(dy <= 1e-6, "start {start}: outputs differ by {dy}");
        assert!(dg <= 1e-6, "start {start}: gradients differ by {dg}");

        // Without autodiff, the same values.
        let plain = Rotary::<Flex>::new(
            d,
            &RopeConfig {
                theta: 10000.0,
                scaling: RopeScaling::None,
            },
            64,
            &dev,
        );
        let y2: Vec<f32> = plain.apply(x0.clone(), start).into_data().to_vec().unwrap();
        assert!(max_abs_diff(&y2, &y_ref) <= 1e-6);
    }
}
