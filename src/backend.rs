//! Backends compiled in by Cargo feature, chosen at run time with `--device`.

use clap::ValueEnum;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DeviceKind {
    /// burn's Flex backend (pure Rust, multi-threaded; feature `flex`, on by default).
    Cpu,
    /// burn's wgpu backend (Vulkan/Metal/DX12; feature `wgpu`).
    Wgpu,
    /// burn's CUDA backend (NVIDIA; feature `cuda`).
    Cuda,
}

/// Workers per training step when `--workers` is not given: one per core on the CPU, where
/// small operations leave cores idle otherwise (README, "Benchmarks"); 1 on a GPU.
pub fn default_workers(kind: DeviceKind) -> usize {
    match kind {
        DeviceKind::Cpu => std::thread::available_parallelism().map_or(1, |n| n.get()),
        DeviceKind::Wgpu | DeviceKind::Cuda => 1,
    }
}

/// Distinct devices of `kind` here: the GPUs CUDA sees (`CUDA_VISIBLE_DEVICES`, else
/// `nvidia-smi -L`), 1 otherwise (the CPU's peers share its cores; wgpu uses its default
/// adapter).
pub fn physical_devices(kind: DeviceKind) -> usize {
    if kind != DeviceKind::Cuda {
        return 1;
    }
    if let Ok(v) = std::env::var("CUDA_VISIBLE_DEVICES") {
        return v.split(',').filter(|s| !s.trim().is_empty()).count().max(1);
    }
    std::process::Command::new("nvidia-smi")
        .arg("-L")
        .output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| l.starts_with("GPU "))
                .count()
        })
        .unwrap_or(0)
        .max(1)
}

#[cfg(feature = "flex")]
pub type Cpu = burn::backend::Flex;
#[cfg(feature = "wgpu")]
pub type Wgpu = burn::backend::Wgpu;
#[cfg(feature = "cuda")]
pub type Cuda = burn::backend::Cuda;

/// Fails unless the NVIDIA driver library can be loaded (the CUDA backend needs it at run time).
#[cfg(feature = "cuda")]
pub fn check_cuda_driver() -> anyhow::Result<()> {
    let names: &[&str] = if cfg!(windows) {
        &["nvcuda.dll"]
    } else {
        &["libcuda.so.1", "libcuda.so"]
    };
    // SAFETY: loading the NVIDIA driver library runs its initialisers, as the CUDA backend
    // itself does a moment later.
    let found = names
        .iter()
        .any(|n| unsafe { libloading::Library::new(*n) }.is_ok());
    if found {
        Ok(())
    } else {
        anyhow::bail!(
            "--device cuda: no NVIDIA driver found (cannot load {})",
            names.join(" or ")
        )
    }
}

// Unused only when every backend is compiled in.
#[allow(dead_code)]
pub fn not_built(kind: DeviceKind, feature: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "--device {}: this shear was built without it (rebuild with `--features {feature}`)",
        format!("{kind:?}").to_lowercase()
    )
}

/// Runs `$body` with `$B` bound to the backend type for `$kind` and `$device` to its device.
macro_rules! dispatch {
    ($kind:expr, |$B:ident, $device:ident| $body:expr) => {{
        use $crate::backend::DeviceKind;
        match $kind {
            DeviceKind::Cpu => {
                #[cfg(feature = "flex")]
                {
                    type $B = $crate::backend::Cpu;
                    let $device = burn::tensor::Device::<$B>::default();
                    $body
                }
                #[cfg(not(feature = "flex"))]
                {
                    Err($crate::backend::not_built($kind, "flex"))
                }
            }
            DeviceKind::Wgpu => {
                #[cfg(feature = "wgpu")]
                {
                    type $B = $crate::backend::Wgpu;
                    let $device = burn::tensor::Device::<$B>::default();
                    $body
                }
                #[cfg(not(feature = "wgpu"))]
                {
                    Err($crate::backend::not_built($kind, "wgpu"))
                }
            }
            DeviceKind::Cuda => {
                #[cfg(feature = "cuda")]
                {
                    match $crate::backend::check_cuda_driver() {
                        Err(e) => Err(e),
                        Ok(()) => {
                            type $B = $crate::backend::Cuda;
                            let $device = burn::tensor::Device::<$B>::default();
                            $body
                        }
                    }
                }
                #[cfg(not(feature = "cuda"))]
                {
                    Err($crate::backend::not_built($kind, "cuda"))
                }
            }
        }
    }};
}
pub(crate) use dispatch;
