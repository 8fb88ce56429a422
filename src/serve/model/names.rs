//! The tensor names of a Llama in each file format, for every loader (candle and the CPU kernels).

/// Whose tensor names: a GGUF file's or a Hugging Face safetensors folder's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    Gguf,
    HuggingFace,
}

/// The names of one decoder layer's tensors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerNames {
    pub attn_norm: String,
    pub q: String,
    pub k: String,
    pub v: String,
    pub o: String,
    pub ffn_norm: String,
    pub gate: String,
    pub up: String,
    pub down: String,
}

impl Naming {
    /// The token embedding.
    pub fn embed(self) -> &'static str {
        self.pick("token_embd.weight", "model.embed_tokens.weight")
    }

    /// The final norm.
    pub fn norm(self) -> &'static str {
        self.pick("output_norm.weight", "model.norm.weight")
    }

    /// The output projection (absent where it is tied to the embedding).
    pub fn lm_head(self) -> &'static str {
        self.pick("output.weight", "lm_head.weight")
    }

    /// The tensors of layer `i`.
    pub fn layer(self, i: usize) -> LayerNames {
        let name = |gguf: &str, hf: &str| match self {
            Naming::Gguf => format!("blk.{i}.{gguf}.weight"),
            Naming::HuggingFace => format!("model.layers.{i}.{hf}.weight"),
        };
        LayerNames {
            attn_norm: name("attn_norm", "input_layernorm"),
            q: name("attn_q", "self_attn.q_proj"),
            k: name("attn_k", "self_attn.k_proj"),
            v: name("attn_v", "self_attn.v_proj"),
            o: name("attn_output", "self_attn.o_proj"),
            ffn_norm: name("ffn_norm", "post_attention_layernorm"),
            gate: name("ffn_gate", "mlp.gate_proj"),
            up: name("ffn_up", "mlp.up_proj"),
            down: name("ffn_down", "mlp.down_proj"),
        }
    }

    fn pick(self, gguf: &'static str, hf: &'static str) -> &'static str {
        match self {
            Naming::Gguf => gguf,
            Naming::HuggingFace => hf,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_formats_name_the_same_tensors() {
        let g = Naming::Gguf.layer(3);
        assert_eq!((g.q.as_str(), g.ffn_norm.as_str(), g.down.as_str()), ("blk.3.attn_q.weight", "blk.3.ffn_norm.weight", "blk.3.ffn_down.weight"));
        let h = Naming::HuggingFace.layer(0);
        assert_eq!(h.o, "model.layers.0.self_attn.o_proj.weight");
        assert_eq!(h.attn_norm, "model.layers.0.input_layernorm.weight");
        assert_eq!((Naming::Gguf.embed(), Naming::HuggingFace.lm_head()), ("token_embd.weight", "lm_head.weight"));
    }
}
