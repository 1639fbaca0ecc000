//! Dequantization of ggml tensor data to `f32`.
//!
//! Each block layout below follows llama.cpp's ggml (`ggml-common.h` for the `block_*` structs,
//! `ggml-quants.c` `dequantize_row_*` for the arithmetic). The arithmetic is done in `f32` in the
//! same order as ggml's reference C code (no fused multiply-add), so results are bit-identical
//! to `dequantize_row_*` and to gguf-py's numpy `dequantize`, which follows the same order.
//! A block's `f16` scales are converted exactly to `f32` before use.

use half::{bf16, f16};

use crate::types::GgmlType;

/// Why [`dequantize`] refused its input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DequantError {
    #[error("dequantizing {0} is not supported")]
    Unsupported(GgmlType),
    #[error("{ty}: {n_out} output values need {expected} input bytes, got {got}")]
    SizeMismatch {
        ty: GgmlType,
        n_out: usize,
        expected: usize,
        got: usize,
    },
}

/// Dequantizes `data`, a whole number of `ty` blocks, into `out`, which must hold exactly the
/// number of values those blocks encode (`data.len() / bytes per block * block size`).
pub fn dequantize(ty: GgmlType, data: &[u8], out: &mut [f32]) -> Result<(), DequantError> {
    let (block, type_size) = ty.block_layout();
    let expected = (out.len() / block).checked_mul(type_size);
    if !out.len().is_multiple_of(block) || expected != Some(data.len()) {
        return Err(DequantError::SizeMismatch {
            ty,
            n_out: out.len(),
            expected: expected.unwrap_or(usize::MAX),
            got: data.len(),
        });
    }
    let blocks = data
        .chunks_exact(type_size)
        .zip(out.chunks_exact_mut(block));
    match ty {
        GgmlType::F32 => blocks.for_each(|(b, y)| y[0] = f32::from_le_bytes(arr(b, 0))),
        GgmlType::F16 => blocks.for_each(|(b, y)| y[0] = f16_at(b, 0)),
        // bf16 is the top half of an f32 (ggml's ggml_bf16_to_fp32: bits << 16).
        GgmlType::BF16 => blocks.for_each(|(b, y)| y[0] = bf16::from_le_bytes(arr(b, 0)).to_f32()),
        GgmlType::F64 => blocks.for_each(|(b, y)| y[0] = f64::from_le_bytes(arr(b, 0)) as f32),
        GgmlType::I8 => blocks.for_each(|(b, y)| y[0] = b[0] as i8 as f32),
        GgmlType::I16 => blocks.for_each(|(b, y)| y[0] = i16::from_le_bytes(arr(b, 0)) as f32),
        GgmlType::I32 => blocks.for_each(|(b, y)| y[0] = i32::from_le_bytes(arr(b, 0)) as f32),
        GgmlType::Q4_0 => blocks.for_each(|(b, y)| q4_0(b, y)),
        GgmlType::Q4_1 => blocks.for_each(|(b, y)| q4_1(b, y)),
        GgmlType::Q5_0 => blocks.for_each(|(b, y)| q5_0(b, y)),
        GgmlType::Q5_1 => blocks.for_each(|(b, y)| q5_1(b, y)),
        GgmlType::Q8_0 => blocks.for_each(|(b, y)| q8_0(b, y)),
        GgmlType::Q2_K => blocks.for_each(|(b, y)| q2_k(b, y)),
        GgmlType::Q3_K => blocks.for_each(|(b, y)| q3_k(b, y)),
        GgmlType::Q4_K => blocks.for_each(|(b, y)| q4_k(b, y)),
        GgmlType::Q5_K => blocks.for_each(|(b, y)| q5_k(b, y)),
        GgmlType::Q6_K => blocks.for_each(|(b, y)| q6_k(b, y)),
        other => return Err(DequantError::Unsupported(other)),
    }
    Ok(())
}

fn arr<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[at..at + N]);
    a
}

fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes(arr(b, at)).to_f32()
}

/// block_q4_0 (18 bytes): `f16 d; u8 qs[16]`. Value j < 16 is the low nibble of qs[j], value
/// j + 16 the high nibble; y = (q - 8) * d.
fn q4_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let qs = &b[2..18];
    for j in 0..16 {
        y[j] = ((qs[j] & 0x0F) as i32 - 8) as f32 * d;
        y[j + 16] = ((qs[j] >> 4) as i32 - 8) as f32 * d;
    }
}

/// block_q4_1 (20 bytes): `f16 d; f16 m; u8 qs[16]`; nibbles as in Q4_0; y = q * d + m.
fn q4_1(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let m = f16_at(b, 2);
    let qs = &b[4..20];
    for j in 0..16 {
        y[j] = (qs[j] & 0x0F) as f32 * d + m;
        y[j + 16] = (qs[j] >> 4) as f32 * d + m;
    }
}

/// block_q5_0 (22 bytes): `f16 d; u8 qh[4]; u8 qs[16]`. Bit j of the little-endian u32 qh is the
/// fifth bit of value j; y = (q - 16) * d.
fn q5_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let qh = u32::from_le_bytes(arr(b, 2));
    let qs = &b[6..22];
    for j in 0..16 {
        let h0 = ((qh >> j) & 1) << 4;
        let h1 = ((qh >> (j + 16)) & 1) << 4;
        y[j] = (((qs[j] & 0x0F) as u32 | h0) as i32 - 16) as f32 * d;
        y[j + 16] = (((qs[j] >> 4) as u32 | h1) as i32 - 16) as f32 * d;
    }
}

/// block_q5_1 (24 bytes): `f16 d; f16 m; u8 qh[4]; u8 qs[16]`; bits as in Q5_0; y = q * d + m.
fn q5_1(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let m = f16_at(b, 2);
    let qh = u32::from_le_bytes(arr(b, 4));
    let qs = &b[8..24];
    for j in 0..16 {
        let h0 = ((qh >> j) & 1) << 4;
        let h1 = ((qh >> (j + 16)) & 1) << 4;
        y[j] = ((qs[j] & 0x0F) as u32 | h0) as f32 * d + m;
        y[j + 16] = ((qs[j] >> 4) as u32 | h1) as f32 * d + m;
    }
}

/// block_q8_0 (34 bytes): `f16 d; i8 qs[32]`; y = q * d.
fn q8_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for (yj, &q) in y.iter_mut().zip(&b[2..34]) {
        *yj = (q as i8) as f32 * d;
    }
}

/// block_q2_K (84 bytes): `u8 scales[16]; u8 qs[64]; f16 d; f16 dmin`. Each scales byte holds a
/// 4-bit scale (low) and 4-bit min (high) for 16 values. Values come in two halves of 128; in a
/// half, 2-bit field `shift` (0, 2, 4, 6) of qs[l] (l < 32) gives value `shift/2 * 32 + l`.
/// y = d * scale * q - dmin * min.
fn q2_k(b: &[u8], y: &mut [f32]) {
    let scales = &b[0..16];
    let qs = &b[16..80];
    let d = f16_at(b, 80);
    let dmin = f16_at(b, 82);
    let mut is = 0;
    for half in 0..2 {
        let q = &qs[half * 32..half * 32 + 32];
        for j in 0..4 {
            let shift = 2 * j;
            for part in 0..2 {
                let sc = scales[is];
                is += 1;
                let dl = d * (sc & 0x0F) as f32;
                let ml = dmin * (sc >> 4) as f32;
                for l in 0..16 {
                    let v = (q[part * 16 + l] >> shift) & 3;
                    y[half * 128 + j * 32 + part * 16 + l] = dl * v as f32 - ml;
                }
            }
        }
    }
}

/// block_q3_K (110 bytes): `u8 hmask[32]; u8 qs[64]; u8 scales[12]; f16 d`. Sixteen 6-bit
/// scales: the low 4 bits of scale i are nibble (i / 8) of scales[i % 8], the high 2 bits are
/// bits 2*(i / 4).. of scales[8 + i % 4]. Value v (half h = v / 128, j = v % 128 / 32, l = v % 32)
/// takes 2 bits `2j` of qs[32h + l] and subtracts 4 when bit `4h + j` of hmask[l] is clear;
/// y = d * (scale - 32) * q.
fn q3_k(b: &[u8], y: &mut [f32]) {
    let hmask = &b[0..32];
    let qs = &b[32..96];
    let sb = &b[96..108];
    let d = f16_at(b, 108);
    let mut scales = [0i32; 16];
    for (i, s) in scales.iter_mut().enumerate() {
        let low = (sb[i % 8] >> (4 * (i / 8))) & 0x0F;
        let high = (sb[8 + i % 4] >> (2 * (i / 4))) & 0x03;
        *s = (low | (high << 4)) as i32 - 32;
    }
    let mut is = 0;
    for half in 0..2 {
        let q = &qs[half * 32..half * 32 + 32];
        for j in 0..4 {
            let shift = 2 * j;
            let m = 1u8 << (4 * half + j);
            for part in 0..2 {
                let dl = d * scales[is] as f32;
                is += 1;
                for l in 0..16 {
                    let idx = part * 16 + l;
                    let low = ((q[idx] >> shift) & 3) as i32;
                    let v = low - if hmask[idx] & m != 0 { 0 } else { 4 };
                    y[half * 128 + j * 32 + idx] = dl * v as f32;
                }
            }
        }
    }
}

/// The 6-bit scale and min of sub-block `j` (0..8) of a Q4_K / Q5_K block's 12 scale bytes
/// (ggml's `get_scale_min_k4`).
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// block_q4_K (144 bytes): `f16 d; f16 dmin; u8 scales[12]; u8 qs[128]`. Eight sub-blocks of 32
/// with 6-bit scale/min; each 64 values use 32 qs bytes, low nibbles first.
/// y = d * scale * q - dmin * min.
fn q4_k(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let dmin = f16_at(b, 2);
    let scales = &b[4..16];
    let qs = &b[16..144];
    for k in 0..4 {
        let (sc1, m1) = scale_min_k4(2 * k, scales);
        let (sc2, m2) = scale_min_k4(2 * k + 1, scales);
        let (d1, m1) = (d * sc1 as f32, dmin * m1 as f32);
        let (d2, m2) = (d * sc2 as f32, dmin * m2 as f32);
        let q = &qs[32 * k..32 * k + 32];
        let out = &mut y[64 * k..64 * k + 64];
        for l in 0..32 {
            out[l] = d1 * (q[l] & 0x0F) as f32 - m1;
            out[l + 32] = d2 * (q[l] >> 4) as f32 - m2;
        }
    }
}

/// block_q5_K (176 bytes): `f16 d; f16 dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]`. As Q4_K,
/// plus a fifth bit for value `64k + l` in bit `2k` of qh[l] and for `64k + 32 + l` in bit
/// `2k + 1`.
fn q5_k(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let dmin = f16_at(b, 2);
    let scales = &b[4..16];
    let qh = &b[16..48];
    let qs = &b[48..176];
    for k in 0..4 {
        let (sc1, m1) = scale_min_k4(2 * k, scales);
        let (sc2, m2) = scale_min_k4(2 * k + 1, scales);
        let (d1, m1) = (d * sc1 as f32, dmin * m1 as f32);
        let (d2, m2) = (d * sc2 as f32, dmin * m2 as f32);
        let (u1, u2) = (1u8 << (2 * k), 2u8 << (2 * k));
        let q = &qs[32 * k..32 * k + 32];
        let out = &mut y[64 * k..64 * k + 64];
        for l in 0..32 {
            let h1 = if qh[l] & u1 != 0 { 16 } else { 0 };
            let h2 = if qh[l] & u2 != 0 { 16 } else { 0 };
            out[l] = d1 * ((q[l] & 0x0F) + h1) as f32 - m1;
            out[l + 32] = d2 * ((q[l] >> 4) + h2) as f32 - m2;
        }
    }
}

/// block_q6_K (210 bytes): `u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d`. Two halves of 128
/// values, each from 64 ql bytes, 32 qh bytes and 8 scales; y = d * scale * (q - 32).
fn q6_k(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 208);
    for half in 0..2 {
        let ql = &b[64 * half..64 * half + 64];
        let qh = &b[128 + 32 * half..128 + 32 * half + 32];
        let sc = &b[192 + 8 * half..192 + 8 * half + 8];
        let out = &mut y[128 * half..128 * half + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            // ggml computes `d * sc * q` left to right.
            out[l] = d * (sc[is] as i8) as f32 * q1 as f32;
            out[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
            out[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
            out[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f16b(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_le_bytes()
    }

    #[test]
    fn q4_0_block_by_hand() {
        // d = 0.5; qs[j] = j | (15 - j) << 4: low nibbles 0..15, high nibbles 15..0.
        let mut b = f16b(0.5).to_vec();
        b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let mut y = [0f32; 32];
        dequantize(GgmlType::Q4_0, &b, &mut y).unwrap();
        for j in 0..16 {
            assert_eq!(y[j], (j as f32 - 8.0) * 0.5);
            assert_eq!(y[j + 16], (7.0 - j as f32) * 0.5);
        }
    }

    #[test]
    fn q8_0_block_by_hand() {
        let mut b = f16b(0.25).to_vec();
        b.extend((0..32i8).map(|j| (j * 4 - 64) as u8));
        let mut y = [0f32; 32];
        dequantize(GgmlType::Q8_0, &b, &mut y).unwrap();
        for (j, v) in y.iter().enumerate() {
            assert_eq!(*v, (j as f32 * 4.0 - 64.0) * 0.25);
        }
    }

    #[test]
    fn q5_0_fifth_bit() {
        // qh bit j set for odd j: value j gets +16.
        let mut b = f16b(1.0).to_vec();
        b.extend(0xAAAA_AAAAu32.to_le_bytes());
        b.extend([0u8; 16]);
        let mut y = [0f32; 32];
        dequantize(GgmlType::Q5_0, &b, &mut y).unwrap();
        for (j, v) in y.iter().enumerate() {
            assert_eq!(*v, if j % 2 == 1 { 0.0 } else { -16.0 });
        }
    }

    #[test]
    fn plain_types() {
        let mut y = [0f32; 2];
        let b: Vec<u8> = [1.5f32, -2.25]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        dequantize(GgmlType::F32, &b, &mut y).unwrap();
        assert_eq!(y, [1.5, -2.25]);
        // bf16 0x3FC0 = 1.5, 0xC010 = -2.25
        dequantize(GgmlType::BF16, &[0xC0, 0x3F, 0x10, 0xC0], &mut y).unwrap();
        assert_eq!(y, [1.5, -2.25]);
    }

    #[test]
    fn size_mismatch_and_unsupported_are_errors() {
        let mut y = [0f32; 32];
        assert!(matches!(
            dequantize(GgmlType::Q8_0, &[0u8; 33], &mut y),
            Err(DequantError::SizeMismatch { .. })
        ));
        let mut y = [0f32; 31];
        assert!(matches!(
            dequantize(GgmlType::Q8_0, &[0u8; 34], &mut y),
            Err(DequantError::SizeMismatch { .. })
        ));
        let mut y = [0f32; 256];
        assert_eq!(
            dequantize(GgmlType::IQ2_XXS, &[0u8; 66], &mut y),
            Err(DequantError::Unsupported(GgmlType::IQ2_XXS))
        );
    }
}
