//! The Lagrangian constraint on the expected shape (SPEC §4.1): for each mask type k,
//! `mean(λ1_k (e_k − t_k) + λ2_k (e_k − t_k)²)`, summed over types. The multipliers are maximised
//! while weights and masks are minimised.

use burn::module::Param;
use burn::prelude::*;
use shear_model::PerType;

/// Multipliers `lambda_1`, `lambda_2` per mask type, in the order layer, hidden, head,
/// intermediate, mlp (`shear_model::masks::MASK_TYPES`; the `mlp` pair only moves when that mask
/// exists); initialised to 0.
#[derive(Module, Debug)]
pub struct Lagrangian<B: Backend> {
    pub lambda_1: Param<Tensor<B, 1>>,
    pub lambda_2: Param<Tensor<B, 1>>,
}

impl<B: Backend> Lagrangian<B> {
    pub fn new(device: &B::Device) -> Self {
        Self::from_values([0.0; 5], [0.0; 5], device)
    }

    pub fn from_values(lambda_1: [f64; 5], lambda_2: [f64; 5], device: &B::Device) -> Self {
        let t = |v: [f64; 5]| {
            Tensor::from_data(TensorData::new(v.map(|x| x as f32).to_vec(), [5]), device)
        };
        Lagrangian {
            lambda_1: Param::from_tensor(t(lambda_1)),
            lambda_2: Param::from_tensor(t(lambda_2)),
        }
    }

    /// `Σ_k mean(λ1_k (e_k − t_k) + λ2_k (e_k − t_k)²)` over the mask types present in
    /// `expected` -> `[1]`.
    pub fn value(&self, expected: &PerType<Tensor<B, 1>>, target: &PerType<f64>) -> Tensor<B, 1> {
        let (l1, l2) = (self.lambda_1.val(), self.lambda_2.val());
        let mut total: Option<Tensor<B, 1>> = None;
        for (k, e) in expected.clone().entries() {
            let t = *target.get(k).expect("a target for every mask type");
            let gap = e.sub_scalar(t);
            let term = (gap.clone() * l1.clone().narrow(0, k, 1)
                + gap.powi_scalar(2) * l2.clone().narrow(0, k, 1))
            .mean();
            total = Some(match total {
                Some(acc) => acc + term,
                None => term,
            });
        }
        total.expect("at least one mask type")
    }

    /// Current values `(lambda_1, lambda_2)` on the host.
    pub fn values(&self) -> ([f64; 5], [f64; 5]) {
        let v = |t: Tensor<B, 1>| -> [f64; 5] {
            let v: Vec<f64> = t.into_data().convert::<f64>().to_vec().expect("f64");
            std::array::from_fn(|i| v[i])
        };
        (v(self.lambda_1.val()), v(self.lambda_2.val()))
    }
}
