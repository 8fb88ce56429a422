//! Quantized weights repacked at load time, eight rows at a time, so that one 256-bit register
//! holds four columns of eight rows. A kernel then multiplies it by four bytes of one token's
//! activations broadcast to every lane, and the eight lanes are the eight rows' partial sums:
//! no horizontal sums, one scale multiply per eight rows, and the unpacked weights of a block
//! serve every token of the tile.
//!
//! The bytes are those of the GGUF blocks (the same f16 scales, the same 4- or 8-bit values),
//! only reordered; [`PackedQ4_1::row`] and [`PackedQ8_0::row`] give a row back.

use super::quant::{BlockQ4_1, BlockQ8_0, QK};

/// Rows in one packed group.
pub const GROUP: usize = 8;

/// Block `b` of eight rows in Q4_1. `qs` is four chunks of 32 bytes; chunk `c` holds, for row
/// `r` at bytes `4r..4r + 4`, that row's GGUF bytes `4c..4c + 4`: the low nibbles are columns
/// `4c..4c + 4` and the high nibbles columns `16 + 4c..16 + 4c + 4`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PackedQ4_1 {
    pub d: [u16; GROUP],
    pub m: [u16; GROUP],
    pub qs: [u8; 4 * 32],
}

/// Block `b` of eight rows in Q8_0. Chunk `c` (of eight, 32 bytes each) holds row `r`'s
/// values `4c..4c + 4` at bytes `4r..4r + 4`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PackedQ8_0 {
    pub d: [u16; GROUP],
    pub qs: [i8; 8 * 32],
}

/// Groups of eight rows, block-major inside a group: group `g`, block `b` at `g * nb + b`.
pub fn pack_q4_1(blocks: &[BlockQ4_1], rows: usize, nb: usize) -> Vec<PackedQ4_1> {
    let mut out = Vec::with_capacity(rows / GROUP * nb);
    for g in 0..rows / GROUP {
        for b in 0..nb {
            let mut p = PackedQ4_1 { d: [0; GROUP], m: [0; GROUP], qs: [0; 128] };
            for r in 0..GROUP {
                let blk = &blocks[(g * GROUP + r) * nb + b];
                p.d[r] = blk.d;
                p.m[r] = blk.m;
                for c in 0..4 {
                    p.qs[c * 32 + 4 * r..c * 32 + 4 * r + 4].copy_from_slice(&blk.qs[4 * c..4 * c + 4]);
                }
            }
            out.push(p);
        }
    }
    out
}

/// See [`pack_q4_1`].
pub fn pack_q8_0(blocks: &[BlockQ8_0], rows: usize, nb: usize) -> Vec<PackedQ8_0> {
    let mut out = Vec::with_capacity(rows / GROUP * nb);
    for g in 0..rows / GROUP {
        for b in 0..nb {
            let mut p = PackedQ8_0 { d: [0; GROUP], qs: [0; 256] };
            for r in 0..GROUP {
                let blk = &blocks[(g * GROUP + r) * nb + b];
                p.d[r] = blk.d;
                for c in 0..8 {
                    p.qs[c * 32 + 4 * r..c * 32 + 4 * r + 4].copy_from_slice(&blk.qs[4 * c..4 * c + 4]);
                }
            }
            out.push(p);
        }
    }
    out
}

impl PackedQ4_1 {
    /// Row `r` (of the group) of this block, as the GGUF block it came from.
    pub fn row(&self, r: usize) -> BlockQ4_1 {
        let mut qs = [0u8; 16];
        for c in 0..4 {
            qs[4 * c..4 * c + 4].copy_from_slice(&self.qs[c * 32 + 4 * r..c * 32 + 4 * r + 4]);
        }
        BlockQ4_1 { d: self.d[r], m: self.m[r], qs }
    }
}

impl PackedQ8_0 {
    /// Row `r` (of the group) of this block, as the GGUF block it came from.
    pub fn row(&self, r: usize) -> BlockQ8_0 {
        let mut qs = [0i8; QK];
        for c in 0..8 {
            qs[4 * c..4 * c + 4].copy_from_slice(&self.qs[c * 32 + 4 * r..c * 32 + 4 * r + 4]);
        }
        BlockQ8_0 { d: self.d[r], qs }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_keeps_every_block() {
        let (rows, nb) = (16, 3);
        let q4: Vec<BlockQ4_1> =
            (0..rows * nb).map(|i| BlockQ4_1 { d: i as u16, m: 1000 + i as u16, qs: std::array::from_fn(|j| (i * 7 + j) as u8) }).collect();
        let q8: Vec<BlockQ8_0> = (0..rows * nb).map(|i| BlockQ8_0 { d: i as u16, qs: std::array::from_fn(|j| (i * 5 + j) as i8) }).collect();
        let (p4, p8) = (pack_q4_1(&q4, rows, nb), pack_q8_0(&q8, rows, nb));
        for row in 0..rows {
            for b in 0..nb {
                let (g, r) = (row / GROUP, row % GROUP);
                assert_eq!(p4[g * nb + b].row(r), q4[row * nb + b]);
                assert_eq!(p8[g * nb + b].row(r), q8[row * nb + b]);
            }
        }
    }
}
