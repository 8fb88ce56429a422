//! Which instruction set the CPU kernels use: detected once at run time, lowered with
//! `GPUBENCH_CPU_ISA=scalar|avx2|vnni` (for comparisons), and per thread in tests.

use std::cell::Cell;
use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// Portable Rust.
    Scalar,
    /// AVX2 + FMA + F16C (x86-64 since 2013).
    Avx2,
    /// AVX2 + FMA with AVX-512 VNNI byte dot products on 256-bit registers.
    Vnni,
}

impl Isa {
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Vnni => "avx512-vnni",
        }
    }
}

/// Every level this CPU can run, best last.
pub fn available() -> Vec<Isa> {
    let mut v = vec![Isa::Scalar];
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c") {
            v.push(Isa::Avx2);
            if is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl") {
                v.push(Isa::Vnni);
            }
        }
    }
    v
}

fn detected() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        let all = available();
        let best = *all.last().unwrap_or(&Isa::Scalar);
        let wanted = match std::env::var("GPUBENCH_CPU_ISA").ok().as_deref() {
            Some("scalar") => Some(Isa::Scalar),
            Some("avx2") => Some(Isa::Avx2),
            Some("vnni") => Some(Isa::Vnni),
            Some(other) => {
                tracing::warn!("GPUBENCH_CPU_ISA={other} is not one of scalar, avx2, vnni; using {}", best.name());
                None
            }
            None => None,
        };
        match wanted {
            Some(w) if all.contains(&w) => w,
            Some(w) => {
                tracing::warn!("this CPU cannot run the {} kernels; using {}", w.name(), best.name());
                best
            }
            None => best,
        }
    })
}

thread_local! {
    static FORCED: Cell<Option<Isa>> = const { Cell::new(None) };
}

/// The level kernels called from this thread use.
pub fn get() -> Isa {
    FORCED.with(|f| f.get()).unwrap_or_else(detected)
}

/// Overrides the level for calls made from this thread (tests compare levels).
#[cfg(test)]
pub fn force(isa: Option<Isa>) {
    FORCED.with(|f| f.set(isa));
}
