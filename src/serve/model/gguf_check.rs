//! Checks of a GGUF file's metadata that its reader does not make (it would panic or misbehave):
//! run over the header before the file is read for real.

use std::io::{Read, Seek, SeekFrom};

use super::super::ServeError;

fn bad(msg: impl Into<String>) -> ServeError {
    ServeError::Model(msg.into())
}

/// Reads the metadata of a GGUF file without keeping it and refuses a `general.alignment` of 0
/// (the tensor data offset is a multiple of it). Leaves the reader anywhere.
pub fn check_header<R: Read + Seek>(r: &mut R) -> Result<(), ServeError> {
    let io = |e: std::io::Error| bad(format!("the GGUF header is truncated or unreadable: {e}"));
    let mut magic = [0u8; 4];
    r.read_exact(&mut magic).map_err(io)?;
    if &magic != b"GGUF" {
        // The reader gives its own error for a file that is not GGUF.
        return Ok(());
    }
    let version = read_u32(r).map_err(io)?;
    let len = |r: &mut R| -> std::io::Result<u64> { if version == 1 { read_u32(r).map(u64::from) } else { read_u64(r) } };
    let _tensors = len(r).map_err(io)?;
    let kv = len(r).map_err(io)?;
    for _ in 0..kv {
        let n = len(r).map_err(io)?;
        if n > 65_536 {
            return Err(bad(format!("a GGUF metadata key is {n} bytes long; the file is broken")));
        }
        let mut key = vec![0u8; n as usize];
        r.read_exact(&mut key).map_err(io)?;
        let key = String::from_utf8_lossy(&key).into_owned();
        let ty = read_u32(r).map_err(io)?;
        if key == "general.alignment" {
            let v = match ty {
                0 | 1 | 7 => read_n(r, 1).map_err(io)?,
                2 | 3 => read_n(r, 2).map_err(io)?,
                4 | 5 => read_n(r, 4).map_err(io)?,
                10 | 11 => read_n(r, 8).map_err(io)?,
                _ => return Err(bad(format!("general.alignment in the GGUF is not an integer (type {ty}); the file is broken"))),
            };
            if v == 0 {
                return Err(bad("general.alignment is 0 in the GGUF (it must be a positive power of two, usually 32); the file is broken"));
            }
            continue;
        }
        skip_value(r, ty, &len, 0).map_err(|e| match e {
            Skip::Io(e) => io(e),
            Skip::Type(t) => bad(format!("GGUF metadata `{key}` has the unknown type {t}; the file is broken or newer than this reader")),
        })?;
    }
    Ok(())
}

enum Skip {
    Io(std::io::Error),
    Type(u32),
}

fn skip_value<R: Read + Seek>(r: &mut R, ty: u32, len: &impl Fn(&mut R) -> std::io::Result<u64>, depth: u32) -> Result<(), Skip> {
    let fixed = |ty: u32| match ty {
        0 | 1 | 7 => Some(1i64),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        10..=12 => Some(8),
        _ => None,
    };
    match ty {
        8 => {
            let n = len(r).map_err(Skip::Io)?;
            skip(r, n).map_err(Skip::Io)
        }
        9 if depth < 4 => {
            let inner = read_u32(r).map_err(Skip::Io)?;
            let n = len(r).map_err(Skip::Io)?;
            match fixed(inner) {
                Some(size) => skip(r, n.saturating_mul(size as u64)).map_err(Skip::Io),
                None => {
                    for _ in 0..n {
                        skip_value(r, inner, len, depth + 1)?;
                    }
                    Ok(())
                }
            }
        }
        t => match fixed(t) {
            Some(size) => skip(r, size as u64).map_err(Skip::Io),
            None => Err(Skip::Type(t)),
        },
    }
}

fn skip<R: Seek>(r: &mut R, n: u64) -> std::io::Result<()> {
    let n = i64::try_from(n).map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "length out of range"))?;
    r.seek(SeekFrom::Current(n)).map(|_| ())
}

fn read_n<R: Read>(r: &mut R, n: usize) -> std::io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b[..n])?;
    Ok(u64::from_le_bytes(b))
}

fn read_u32<R: Read>(r: &mut R) -> std::io::Result<u32> {
    read_n(r, 4).map(|v| v as u32)
}

fn read_u64<R: Read>(r: &mut R) -> std::io::Result<u64> {
    read_n(r, 8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::gguf_file::{self, Value};

    fn gguf(md: &[(&str, Value)]) -> Vec<u8> {
        let mut out = std::io::Cursor::new(Vec::new());
        let refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (*k, v)).collect();
        gguf_file::write(&mut out, &refs, &[]).unwrap();
        out.into_inner()
    }

    #[test]
    fn a_zero_alignment_is_refused_by_name() {
        let md = [
            ("general.architecture", Value::String("llama".into())),
            ("tokenizer.ggml.tokens", Value::Array(vec![Value::String("a".into()), Value::String("b".into())])),
            ("general.alignment", Value::U32(0)),
        ];
        let err = check_header(&mut std::io::Cursor::new(gguf(&md))).unwrap_err().to_string();
        assert!(err.contains("general.alignment"), "{err}");
    }

    #[test]
    fn a_sound_header_passes() {
        let md = [
            ("general.architecture", Value::String("llama".into())),
            ("llama.block_count", Value::U32(2)),
            ("nested", Value::Array(vec![Value::Array(vec![Value::F32(1.0)])])),
            ("general.alignment", Value::U32(32)),
        ];
        check_header(&mut std::io::Cursor::new(gguf(&md))).unwrap();
        let mut truncated = gguf(&md);
        truncated.truncate(30);
        assert!(check_header(&mut std::io::Cursor::new(truncated)).is_err());
    }
}
