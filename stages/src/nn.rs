//! Shared pieces of the libtorch (tch) models that live with their stages.

use tch::Device;

/// The device models run on: CUDA when libtorch sees a GPU, else the CPU.
pub fn device() -> Device {
    Device::cuda_if_available()
}

#[cfg(test)]
mod tests {
    use tch::nn::{self, Module, OptimizerConfig};
    use tch::{Kind, Tensor};

    /// A real libtorch training step must reduce a loss: a broken link or a
    /// mismatched libtorch fails here, not in a user's first MEDIC run.
    #[test]
    fn a_training_step_reduces_the_loss() {
        tch::manual_seed(7);
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let net = nn::linear(vs.root(), 3, 1, Default::default());
        let x = Tensor::randn([64, 3], (Kind::Float, tch::Device::Cpu));
        let y = x.matmul(&Tensor::from_slice(&[1.0f32, -2.0, 0.5]).view([3, 1])) + 0.3;
        let mut opt = nn::Adam::default().build(&vs, 5e-2).unwrap();
        let loss = |net: &nn::Linear| net.forward(&x).mse_loss(&y, tch::Reduction::Mean);
        let before = loss(&net).double_value(&[]);
        for _ in 0..100 {
            opt.backward_step(&loss(&net));
        }
        let after = loss(&net).double_value(&[]);
        assert!(after < 0.5 * before, "loss {before} -> {after}");
    }
}
