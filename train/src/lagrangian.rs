//! The Lagrangian constraint on the expected shape (docs/algorithm.md §4.1): for each mask type
//! k, `mean(λ1_k (e_k − t_k) + λ2_k (e_k − t_k)²)`, summed over the types present. The
//! multipliers are maximised while weights and masks are minimised.

use burn::module::Param;
use burn::prelude::*;
use shear_model::{MaskType, PerType};

/// Multipliers `lambda_1`, `lambda_2`, one entry per [`MaskType`] (in `MaskType::ALL` order;
/// an entry moves only when its mask exists), initialised to 0.
#[derive(Module, Debug)]
pub struct Lagrangian<B: Backend> {
    pub lambda_1: Param<Tensor<B, 1>>,
    pub lambda_2: Param<Tensor<B, 1>>,
}

impl<B: Backend> Lagrangian<B> {
    pub fn new(device: &B::Device) -> Self {
        let zeros = || Param::from_tensor(Tensor::zeros([MaskType::ALL.len()], device));
        Lagrangian {
            lambda_1: zeros(),
            lambda_2: zeros(),
        }
    }

    /// `Σ_k mean(λ1_k (e_k − t_k) + λ2_k (e_k − t_k)²)` over the mask types in `expected`
    /// -> `[1]`.
    pub fn value(&self, expected: &PerType<Tensor<B, 1>>, target: &PerType<f64>) -> Tensor<B, 1> {
        let (l1, l2) = (self.lambda_1.val(), self.lambda_2.val());
        let mut total: Option<Tensor<B, 1>> = None;
        for (k, e) in expected.iter() {
            let t = *target.get(k).expect("a target for every mask type");
            let i = k.index();
            let gap = e.clone().sub_scalar(t);
            let term = (gap.clone() * l1.clone().narrow(0, i, 1)
                + gap.powi_scalar(2) * l2.clone().narrow(0, i, 1))
            .mean();
            total = Some(match total {
                Some(acc) => acc + term,
                None => term,
            });
        }
        total.expect("at least one mask type")
    }

    /// Current values of the types in `types`, on the host: `(lambda_1, lambda_2)`.
    pub fn values(&self, types: &[MaskType]) -> (PerType<f64>, PerType<f64>) {
        let host =
            |t: Tensor<B, 1>| -> Vec<f64> { t.into_data().convert::<f64>().to_vec().expect("f64") };
        let (a, b) = (host(self.lambda_1.val()), host(self.lambda_2.val()));
        let pick = |v: &[f64]| types.iter().map(|k| (*k, v[k.index()])).collect();
        (pick(&a), pick(&b))
    }

    /// Multipliers with the given values (types not named are 0).
    pub fn from_values(l1: &PerType<f64>, l2: &PerType<f64>, device: &B::Device) -> Self {
        let t = |v: &PerType<f64>| {
            let mut all = vec![0f32; MaskType::ALL.len()];
            for (k, x) in v.iter() {
                all[k.index()] = *x as f32;
            }
            Param::from_tensor(Tensor::from_data(
                TensorData::new(all, [MaskType::ALL.len()]),
                device,
            ))
        };
        Lagrangian {
            lambda_1: t(l1),
            lambda_2: t(l2),
        }
    }
}
