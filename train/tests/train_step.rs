//! The model trains: on `Autodiff<Flex>`, AdamW steps on one batch lower the loss, and every
//! parameter receives a gradient.

use burn::backend::Autodiff;
use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use shear_model::{load_llama, Llama};
use shear_testkit::*;

type AD = Autodiff<B>;

#[test]
fn adamw_steps_lower_the_loss_and_reach_every_parameter() {
    let mut model: Llama<AD> =
        load_llama(&fixture("llama-gqa-tied-bf16-sharded"), &device()).unwrap();
    let ids: Vec<i64> = (0..32).map(|i| (i * 53 + 7) % 1000).collect();
    let ids = Tensor::<AD, 2, Int>::from_data(TensorData::new(ids, [2, 16]), &device());
    let mut optim = AdamWConfig::new()
        .with_beta_2(0.95)
        .with_weight_decay(0.0)
        .init::<AD, Llama<AD>>();
    let mut losses = Vec::new();
    for step in 0..5 {
        let loss = model.loss(ids.clone());
        losses.push(loss.clone().into_scalar());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        if step == 0 {
            assert_eq!(
                grads.len(),
                model.num_params_tensors(),
                "every parameter has a gradient"
            );
        }
        model = optim.step(3e-3, model, grads);
    }
    assert!(losses[4] < losses[0] - 0.1, "loss did not fall: {losses:?}");
}

trait CountTensors {
    fn num_params_tensors(&self) -> usize;
}

impl<M: Module<AD>> CountTensors for M {
    fn num_params_tensors(&self) -> usize {
        struct Count(usize);
        impl burn::module::ModuleVisitor<AD> for Count {
            fn visit_float<const D: usize>(&mut self, _: &burn::module::Param<Tensor<AD, D>>) {
                self.0 += 1;
            }
        }
        let mut c = Count(0);
        self.visit(&mut c);
        c.0
    }
}
