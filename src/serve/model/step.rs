//! The host side of one candle step: tokens in the order the forward runs them (decoding sequences
//! first, then prompt chunks), their positions and cache slots, and the gather indices and masks
//! of the attention, each uploaded as one tensor.

use candle_core::{Device, Result, Tensor};

use super::candle::{count_op, CandleInput};

/// One prompt chunk: `n` tokens from row `row` of the step, at positions `start..start + n`.
pub struct Chunk {
    pub row: usize,
    pub n: usize,
    pub start: usize,
    /// Cache slots of positions `0..start + n`.
    slots: Vec<u32>,
}

/// The decoding sequences' cache layout: `batch` rows of `longest` slots, padded.
struct Decode {
    batch: usize,
    longest: usize,
    slots: Vec<u32>,
    mask: Vec<f32>,
}

/// The decoding sequences' gather index `(batch * longest)` and additive length mask
/// `(batch, 1, 1, longest)`, on the device.
pub struct DecodeTensors {
    pub batch: usize,
    pub longest: usize,
    pub slots: Tensor,
    pub mask: Tensor,
}

pub struct StepPlan {
    pub ids: Vec<u32>,
    pub pos: Vec<u32>,
    /// The cache slot each token's K and V go to.
    pub write_slots: Vec<u32>,
    /// Per input with `want_logits`, in input order: the row of its last token.
    pub logit_rows: Vec<u32>,
    decode: Option<Decode>,
    pub chunks: Vec<Chunk>,
}

impl StepPlan {
    /// The plan of `inputs`, whose caches are reserved for their new tokens.
    pub fn new(inputs: &[CandleInput<'_>]) -> Self {
        let t: usize = inputs.iter().map(|i| i.tokens.len()).sum();
        let mut plan = StepPlan {
            ids: Vec::with_capacity(t),
            pos: Vec::with_capacity(t),
            write_slots: Vec::with_capacity(t),
            logit_rows: Vec::new(),
            decode: None,
            chunks: Vec::new(),
        };
        let mut last_row = vec![0u32; inputs.len()];
        let decoding: Vec<usize> = (0..inputs.len()).filter(|&i| inputs[i].tokens.len() == 1).collect();
        if !decoding.is_empty() {
            let longest = decoding.iter().map(|&i| inputs[i].cache.len() + 1).max().unwrap_or(1);
            let mut d = Decode { batch: decoding.len(), longest, slots: Vec::new(), mask: Vec::new() };
            d.slots.reserve(d.batch * longest);
            d.mask.reserve(d.batch * longest);
            for &i in &decoding {
                let (cache, at) = (&inputs[i].cache, inputs[i].cache.len());
                last_row[i] = plan.ids.len() as u32;
                plan.ids.push(inputs[i].tokens[0]);
                plan.pos.push(at as u32);
                plan.write_slots.push(cache.slot(at));
                // Padding reads slot 0 and is masked out.
                d.slots.extend((0..longest).map(|p| if p <= at { cache.slot(p) } else { 0 }));
                d.mask.extend((0..longest).map(|p| if p <= at { 0.0 } else { f32::NEG_INFINITY }));
            }
            plan.decode = Some(d);
        }
        for (i, inp) in inputs.iter().enumerate() {
            let n = inp.tokens.len();
            if n == 1 {
                continue;
            }
            let (start, row) = (inp.cache.len(), plan.ids.len());
            plan.ids.extend_from_slice(inp.tokens);
            plan.pos.extend((start..start + n).map(|p| p as u32));
            plan.write_slots.extend((start..start + n).map(|p| inp.cache.slot(p)));
            last_row[i] = (row + n - 1) as u32;
            let slots = (0..start + n).map(|p| inp.cache.slot(p)).collect();
            plan.chunks.push(Chunk { row, n, start, slots });
        }
        plan.logit_rows = inputs.iter().zip(&last_row).filter(|(i, _)| i.want_logits).map(|(_, &r)| r).collect();
        plan
    }

    /// The decoding sequences' gather index and mask on `device` (two uploads), if any decode.
    pub fn decode_tensors(&self, device: &Device) -> Result<Option<DecodeTensors>> {
        let Some(d) = &self.decode else { return Ok(None) };
        count_op(2);
        let slots = Tensor::from_vec(d.slots.clone(), (d.batch * d.longest,), device)?;
        let mask = Tensor::from_vec(d.mask.clone(), (d.batch, 1, 1, d.longest), device)?;
        Ok(Some(DecodeTensors { batch: d.batch, longest: d.longest, slots, mask }))
    }

    /// Per chunk its gather index `(start + n)` and causal mask `(n, start + n)` (two uploads each).
    pub fn chunk_tensors(&self, device: &Device) -> Result<Vec<(Tensor, Tensor)>> {
        self.chunks
            .iter()
            .map(|c| {
                count_op(2);
                let l = c.start + c.n;
                let mask: Vec<f32> = (0..c.n)
                    .flat_map(|i| (0..l).map(move |j| if j > c.start + i { f32::NEG_INFINITY } else { 0.0 }))
                    .collect();
                Ok((Tensor::from_vec(c.slots.clone(), (l,), device)?, Tensor::from_vec(mask, (c.n, l), device)?))
            })
            .collect()
    }
}
