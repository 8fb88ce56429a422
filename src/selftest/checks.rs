//! The operations `self-test` runs: each computes on the device and on the CPU from the same
//! deterministic inputs and returns the normalized largest difference.

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Result, Tensor};

/// One check: a name, what it runs, and the largest error it may show.
pub struct Check {
    pub name: &'static str,
    pub tolerance: f64,
    pub run: fn(&Device) -> Result<f64>,
}

pub fn all_checks() -> Vec<Check> {
    vec![
        Check { name: "copy host -> device -> host", tolerance: 0.0, run: round_trip },
        Check { name: "random normal (mean, std)", tolerance: 1e-2, run: random_normal },
        Check { name: "f32 matmul (cuBLAS)", tolerance: 1e-3, run: matmul_f32 },
        Check { name: "bf16 matmul (cuBLAS)", tolerance: 2e-2, run: matmul_bf16 },
        Check { name: "unary, binary, reduce kernels", tolerance: 1e-4, run: elementwise },
        Check { name: "embedding lookup (index_select)", tolerance: 0.0, run: embedding },
        Check { name: "softmax kernel", tolerance: 1e-5, run: softmax },
        Check { name: "rms_norm kernel", tolerance: 1e-4, run: rms_norm },
        Check { name: "rope kernel", tolerance: 1e-5, run: rope },
        Check { name: "Q4_1 matmul, 1 row (mmvq)", tolerance: 2e-2, run: |d| quantized(d, GgmlDType::Q4_1, 1) },
        Check { name: "Q4_1 matmul, 32 rows", tolerance: 2e-2, run: |d| quantized(d, GgmlDType::Q4_1, 32) },
        Check { name: "Q8_0 matmul, 1 row (mmvq)", tolerance: 2e-2, run: |d| quantized(d, GgmlDType::Q8_0, 1) },
    ]
}

/// Deterministic values in [-1, 1] on the CPU.
fn data(rows: usize, cols: usize, seed: usize) -> Result<Tensor> {
    let values: Vec<f32> = (0..rows * cols).map(|i| (((i * 7 + seed * 13) % 1009) as f32 * 0.731 + seed as f32).sin()).collect();
    Tensor::from_vec(values, (rows, cols), &Device::Cpu)
}

/// max |got - want| / max |want|, both read back as f32.
fn relative_error(got: &Tensor, want: &Tensor) -> Result<f64> {
    let got = got.to_device(&Device::Cpu)?.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let want = want.to_device(&Device::Cpu)?.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    if got.len() != want.len() {
        candle_core::bail!("{} values from the device, {} from the CPU", got.len(), want.len());
    }
    let scale = want.iter().fold(0f64, |m, w| m.max(w.abs() as f64)).max(1e-12);
    let diff = got.iter().zip(&want).fold(0f64, |m, (g, w)| {
        let d = (*g as f64 - *w as f64).abs();
        if d.is_nan() { f64::INFINITY } else { m.max(d) }
    });
    Ok(diff / scale)
}

fn round_trip(dev: &Device) -> Result<f64> {
    let x = data(257, 129, 1)?;
    relative_error(&x.to_device(dev)?, &x)
}

fn random_normal(dev: &Device) -> Result<f64> {
    let x = Tensor::randn(0f32, 1f32, 1 << 20, dev)?;
    let mean = x.mean_all()?.to_scalar::<f32>()? as f64;
    let var = x.sqr()?.mean_all()?.to_scalar::<f32>()? as f64 - mean * mean;
    Ok(mean.abs().max((var.sqrt() - 1.0).abs()))
}

fn matmul_f32(dev: &Device) -> Result<f64> {
    let (a, b) = (data(64, 384, 2)?, data(384, 192, 3)?);
    let want = a.matmul(&b)?;
    let got = a.to_device(dev)?.matmul(&b.to_device(dev)?)?;
    relative_error(&got, &want)
}

fn matmul_bf16(dev: &Device) -> Result<f64> {
    let (a, b) = (data(64, 384, 4)?, data(384, 192, 5)?);
    let want = a.matmul(&b)?;
    let got = a.to_device(dev)?.to_dtype(DType::BF16)?.matmul(&b.to_device(dev)?.to_dtype(DType::BF16)?)?;
    relative_error(&got, &want)
}

fn elementwise(dev: &Device) -> Result<f64> {
    let f = |x: &Tensor, y: &Tensor| -> Result<Tensor> {
        (x.silu()? + y.exp()?.broadcast_mul(&y.narrow(0, 0, 1)?)?)?.sum_keepdim(1)?.abs()?.sqrt()?.maximum(0.5)
    };
    let (x, y) = (data(48, 300, 6)?, data(48, 300, 7)?);
    relative_error(&f(&x.to_device(dev)?, &y.to_device(dev)?)?, &f(&x, &y)?)
}

fn embedding(dev: &Device) -> Result<f64> {
    let table = data(1000, 64, 8)?;
    let ids = Tensor::new(&[0u32, 999, 17, 17, 500, 3], &Device::Cpu)?;
    let want = table.index_select(&ids, 0)?;
    let got = table.to_device(dev)?.index_select(&ids.to_device(dev)?, 0)?;
    relative_error(&got, &want)
}

fn softmax(dev: &Device) -> Result<f64> {
    let x = (data(32, 1000, 9)? * 8.0)?;
    relative_error(&candle_nn::ops::softmax_last_dim(&x.to_device(dev)?)?, &candle_nn::ops::softmax_last_dim(&x)?)
}

fn rms_norm(dev: &Device) -> Result<f64> {
    let x = data(16, 2048, 10)?;
    let alpha = data(1, 2048, 11)?.squeeze(0)?;
    let want = candle_nn::ops::rms_norm(&x, &alpha, 1e-5)?;
    let got = candle_nn::ops::rms_norm(&x.to_device(dev)?, &alpha.to_device(dev)?, 1e-5)?;
    relative_error(&got, &want)
}

fn rope(dev: &Device) -> Result<f64> {
    let x = data(4 * 16, 64, 12)?.reshape((1, 4, 16, 64))?;
    let (cos, sin) = (data(16, 32, 13)?, data(16, 32, 14)?);
    let want = candle_nn::rotary_emb::rope(&x, &cos, &sin)?;
    let got = candle_nn::rotary_emb::rope(&x.to_device(dev)?, &cos.to_device(dev)?, &sin.to_device(dev)?)?;
    relative_error(&got, &want)
}

fn quantized(dev: &Device, dtype: GgmlDType, rows: usize) -> Result<f64> {
    let w = data(256, 512, 15)?;
    let x = data(rows, 512, 16)?;
    let want = QMatMul::from_qtensor(QTensor::quantize(&w, dtype)?)?.forward(&x)?;
    let on_device = QMatMul::from_qtensor(QTensor::quantize(&w.to_device(dev)?, dtype)?)?;
    let got = on_device.forward(&x.to_device(dev)?)?;
    if got.dims() != want.dims() {
        candle_core::bail!("shape {:?} on the device, {:?} on the CPU", got.dims(), want.dims());
    }
    relative_error(&got, &want)
}
