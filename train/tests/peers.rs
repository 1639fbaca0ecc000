//! The all-reduce of a step between data-parallel peers (peers.rs) against a hand computation:
//! two CPU peers with known gradients and figures, shares 2/3 and 1/3 of a 3-row batch.

use burn::backend::{Autodiff, Flex};
use burn::module::{Module, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use shear_train::peers::{self, Peer, Topology};

type B = Flex;
type AD = Autodiff<B>;

#[derive(Module, Debug)]
struct Two<B: Backend> {
    a: Param<Tensor<B, 1>>,
    b: Param<Tensor<B, 2>>,
}

/// Gradients of `Σ a·x + Σ b·y`: `x` and `y` themselves.
fn grads(m: &Two<AD>, x: &[f32; 3], y: &[[f32; 2]; 2]) -> GradientsParams {
    let device = Default::default();
    let x = Tensor::<AD, 1>::from_floats(*x, &device);
    let y = Tensor::<AD, 2>::from_floats(*y, &device);
    let loss = (m.a.val() * x).sum() + (m.b.val() * y).sum();
    GradientsParams::from_grads(loss.backward(), m)
}

fn values<const D: usize>(g: &GradientsParams, p: &Param<Tensor<AD, D>>) -> Vec<f32> {
    g.get::<B, D>(p.id)
        .expect("a gradient")
        .into_data()
        .to_vec::<f32>()
        .unwrap()
}

#[test]
fn two_peers_sum_their_weighted_gradients_and_figures() {
    let device = Default::default();
    let model = Two::<AD> {
        a: Param::from_tensor(Tensor::zeros([3], &device)),
        b: Param::from_tensor(Tensor::zeros([2, 2], &device)),
    };
    let x = [[1.0, 2.0, 3.0], [10.0, 20.0, 30.0]];
    let y = [[[1.0, -1.0], [0.5, 4.0]], [[-3.0, 3.0], [2.0, 8.0]]];
    let topology = Topology {
        devices: 2,
        ..Topology::default()
    };
    let _session = peers::session::<B>();
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|local| {
                let (model, topology) = (&model, &topology);
                let (x, y) = (x[local], y[local]);
                s.spawn(move || {
                    let peer = Peer::join::<B>(topology, local, &device)
                        .unwrap()
                        .with_batch(3);
                    let m = model.clone().fork(&device);
                    let g = grads(&m, &x, &y);
                    let mut weighted = [local as f64 + 1.0];
                    let tokens = 100 * (local + 1);
                    let (g, tokens) = peer
                        .reduce_step::<AD, _>(g, &m, &mut weighted, tokens)
                        .unwrap();
                    let out = (
                        peer.rows(3),
                        values(&g, &m.a),
                        values(&g, &m.b),
                        weighted[0],
                        tokens,
                    );
                    peer.leave::<B>(&device).unwrap();
                    out
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // Peer 0 has rows 0..2, peer 1 row 2: shares 2/3 and 1/3.
    assert_eq!(results[0].0, 0..2);
    assert_eq!(results[1].0, 2..3);
    let (w0, w1) = (2.0f32 / 3.0, 1.0f32 / 3.0);
    let a: Vec<f32> = (0..3).map(|i| w0 * x[0][i] + w1 * x[1][i]).collect();
    let b: Vec<f32> = (0..4)
        .map(|i| w0 * y[0][i / 2][i % 2] + w1 * y[1][i / 2][i % 2])
        .collect();
    for (rows, ga, gb, weighted, tokens) in &results {
        for (got, want) in ga.iter().zip(&a).chain(gb.iter().zip(&b)) {
            assert!(
                (got - want).abs() <= 1e-6 * want.abs().max(1.0),
                "peer with rows {rows:?}: {got} vs {want}"
            );
        }
        // Figures: weighted by the shares; token counts summed, and each peer's own known.
        assert!((weighted - (2.0 / 3.0 * 1.0 + 1.0 / 3.0 * 2.0)).abs() < 1e-6);
        assert_eq!(tokens.total, 300);
        assert_eq!(tokens.per_peer, Some(vec![100, 200]));
    }
    // Both peers hold the very same gradients (one sum, shared).
    assert_eq!(results[0].1, results[1].1);
    assert_eq!(results[0].2, results[1].2);
}

#[test]
fn a_solo_peer_changes_nothing() {
    let device = Default::default();
    let model = Two::<AD> {
        a: Param::from_tensor(Tensor::zeros([3], &device)),
        b: Param::from_tensor(Tensor::zeros([2, 2], &device)),
    };
    let g = grads(&model, &[1.0, 2.0, 3.0], &[[1.0, 2.0], [3.0, 4.0]]);
    let mut weighted = [0.25];
    let (g, tokens) = Peer::solo()
        .reduce_step::<AD, _>(g, &model, &mut weighted, 7)
        .unwrap();
    assert_eq!(values(&g, &model.a), vec![1.0, 2.0, 3.0]);
    assert_eq!(
        (weighted[0], tokens.total, tokens.per_peer),
        (0.25, 7, None)
    );
}
