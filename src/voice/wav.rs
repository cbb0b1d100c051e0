//! Reads a voice clip: a WAV file of 16 kHz mono signed 16-bit little-endian PCM.
//!
//! A WAV file is a RIFF container: `RIFF`, a size, `WAVE`, then chunks (a four-letter
//! id, a little-endian size, the data, a pad byte when the size is odd). Only `fmt ` and
//! `data` matter; everything else (`LIST` with the recorder's name, `fact`, `cue `, ...)
//! is skipped, since editors add them freely. The format is checked, never converted:
//! a clip in another rate or width would be said at the wrong speed or as noise, so it
//! is refused with what to do instead.

use std::fmt;

/// The one format the player is given (`aplay -f S16_LE -r 16000 -c 1`).
pub const RATE: u32 = 16_000;
/// A clip longer than this is refused: a voice pack's words are short, and a store's
/// mistaken song must not hold the speaker (or the memory) for minutes.
pub const MAX_SECONDS: u32 = 10;
/// The most a clip file may hold: the samples allowed and room for the header chunks.
pub const MAX_FILE: u64 = (MAX_SECONDS * RATE * 2) as u64 + 64 * 1024;

const PCM: u16 = 1;
const EXTENSIBLE: u16 = 0xFFFE;

/// Why a file is not a clip the player can take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub String);

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn bad<T>(what: impl Into<String>) -> Result<T, Malformed> {
    Err(Malformed(what.into()))
}

/// The PCM samples of a WAV file's bytes, as the raw little-endian bytes `aplay` takes.
pub fn samples(file: &[u8]) -> Result<Vec<u8>, Malformed> {
    if file.len() < 12 || &file[0..4] != b"RIFF" || &file[8..12] != b"WAVE" {
        return bad("not a WAV file (no RIFF/WAVE header)");
    }
    let mut format = None;
    let mut data = None;
    let mut rest = &file[12..];
    while rest.len() >= 8 {
        let id = &rest[0..4];
        let size = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
        let body = &rest[8..];
        if size > body.len() {
            return bad(format!(
                "chunk '{}' says {size} bytes but the file ends after {} (a cut-off copy?)",
                String::from_utf8_lossy(id).escape_debug(),
                body.len()
            ));
        }
        match id {
            b"fmt " => format = Some(&body[..size]),
            b"data" => data = Some(&body[..size]),
            _ => {}
        }
        // Chunks are padded to an even size; a missing pad byte at the very end is fine.
        let next = (size + (size & 1)).min(body.len());
        rest = &body[next..];
    }
    let Some(format) = format else {
        return bad("no 'fmt ' chunk");
    };
    check_format(format)?;
    let Some(data) = data else {
        return bad("no 'data' chunk");
    };
    if data.len() % 2 != 0 {
        return bad("the 'data' chunk holds half a sample");
    }
    if data.len() as u64 > (MAX_SECONDS * RATE * 2) as u64 {
        return bad(format!("longer than {MAX_SECONDS} s"));
    }
    Ok(data.to_vec())
}

fn check_format(f: &[u8]) -> Result<(), Malformed> {
    if f.len() < 16 {
        return bad("the 'fmt ' chunk is too short");
    }
    let u16_at = |i: usize| u16::from_le_bytes([f[i], f[i + 1]]);
    let u32_at = |i: usize| u32::from_le_bytes([f[i], f[i + 1], f[i + 2], f[i + 3]]);
    let mut tag = u16_at(0);
    // WAVE_FORMAT_EXTENSIBLE names the real format in the first two bytes of its
    // sub-format GUID (offset 24).
    if tag == EXTENSIBLE && f.len() >= 26 {
        tag = u16_at(24);
    }
    let (channels, rate, bits) = (u16_at(2), u32_at(4), u16_at(14));
    if tag != PCM || channels != 1 || rate != RATE || bits != 16 {
        return bad(format!(
            "{} {channels} channel(s), {rate} Hz, {bits} bits: a clip must be 16 kHz mono \
             16-bit PCM (sox IN.wav -r 16000 -c 1 -b 16 -e signed-integer OUT.wav)",
            if tag == PCM { "PCM," } else { "not PCM," }
        ));
    }
    Ok(())
}

/// A WAV file of 16 kHz mono 16-bit PCM holding `pcm` (little-endian samples), with the
/// chunks a recorder may add before the data (`extra`: id and body each).
pub fn encode(pcm: &[u8], extra: &[(&[u8; 4], &[u8])]) -> Vec<u8> {
    let mut chunks = Vec::new();
    let mut chunk = |id: &[u8; 4], body: &[u8]| {
        chunks.extend_from_slice(id);
        chunks.extend_from_slice(&(body.len() as u32).to_le_bytes());
        chunks.extend_from_slice(body);
        if body.len() % 2 == 1 {
            chunks.push(0);
        }
    };
    let mut fmt = Vec::new();
    fmt.extend_from_slice(&PCM.to_le_bytes());
    fmt.extend_from_slice(&1u16.to_le_bytes());
    fmt.extend_from_slice(&RATE.to_le_bytes());
    fmt.extend_from_slice(&(RATE * 2).to_le_bytes());
    fmt.extend_from_slice(&2u16.to_le_bytes());
    fmt.extend_from_slice(&16u16.to_le_bytes());
    chunk(b"fmt ", &fmt);
    for (id, body) in extra {
        chunk(id, body);
    }
    chunk(b"data", pcm);
    let mut file = b"RIFF".to_vec();
    file.extend_from_slice(&(4 + chunks.len() as u32).to_le_bytes());
    file.extend_from_slice(b"WAVE");
    file.extend_from_slice(&chunks);
    file
}

#[cfg(test)]
mod tests {
    use super::*;

    const PCM_BYTES: [u8; 6] = [1, 0, 0xff, 0x7f, 0, 0x80];

    #[test]
    fn the_samples_come_back_past_list_and_odd_sized_chunks() {
        let file = encode(
            &PCM_BYTES,
            &[(b"LIST", b"INFOISFT\x05\0\0\0sox\0\0"), (b"junk", b"odd")],
        );
        assert_eq!(samples(&file).unwrap(), PCM_BYTES);
        assert_eq!(samples(&encode(&[], &[])).unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn a_data_chunk_before_fmt_is_read_too() {
        let file = encode(&PCM_BYTES, &[]);
        // RIFF header, then swap the fmt chunk (8 + 16 bytes) and the data chunk.
        let (fmt, data) = file[12..].split_at(24);
        let swapped = [&file[..12], data, fmt].concat();
        assert_eq!(samples(&swapped).unwrap(), PCM_BYTES);
    }

    #[test]
    fn other_formats_and_broken_files_are_refused_with_the_reason() {
        let good = encode(&PCM_BYTES, &[]);
        let with_fmt = |offset: usize, value: &[u8]| {
            let mut f = good.clone();
            f[20 + offset..20 + offset + value.len()].copy_from_slice(value);
            samples(&f).unwrap_err().0
        };
        assert!(with_fmt(2, &2u16.to_le_bytes()).contains("2 channel(s)"));
        assert!(with_fmt(4, &44100u32.to_le_bytes()).contains("44100 Hz"));
        assert!(with_fmt(14, &8u16.to_le_bytes()).contains("8 bits"));
        assert!(with_fmt(0, &3u16.to_le_bytes()).contains("not PCM"));
        let cases: &[(&[u8], &str)] = &[
            (b"", "not a WAV"),
            (b"RIFF\0\0\0\0AVI LIST", "not a WAV"),
            (&good[..good.len() - 1], "cut-off"),
            (&good[..36], "no 'data'"),
            (&[&good[..12], &good[36..]].concat(), "no 'fmt '"),
        ];
        for (file, want) in cases {
            let got = samples(file).unwrap_err().0;
            assert!(got.contains(want), "{got} (want {want})");
        }
        let odd = encode(&PCM_BYTES[..5], &[]);
        assert!(samples(&odd).unwrap_err().0.contains("half a sample"));
        let long = encode(&vec![0; (MAX_SECONDS * RATE * 2) as usize + 2], &[]);
        assert!(samples(&long).unwrap_err().0.contains("longer than"));
    }

    #[test]
    fn wave_format_extensible_with_pcm_is_read() {
        let mut fmt = Vec::new();
        for v in [EXTENSIBLE, 1] {
            fmt.extend_from_slice(&v.to_le_bytes());
        }
        fmt.extend_from_slice(&RATE.to_le_bytes());
        fmt.extend_from_slice(&(RATE * 2).to_le_bytes());
        for v in [2u16, 16, 22, 16] {
            fmt.extend_from_slice(&v.to_le_bytes());
        }
        fmt.extend_from_slice(&[4, 0, 0, 0]); // channel mask
        fmt.extend_from_slice(&PCM.to_le_bytes());
        fmt.extend_from_slice(&[0; 14]); // rest of the GUID
        let mut file = encode(&PCM_BYTES, &[]);
        // Replace the plain fmt chunk (at 12, 8 + 16 bytes) with the extensible one.
        let mut chunk = b"fmt ".to_vec();
        chunk.extend_from_slice(&(fmt.len() as u32).to_le_bytes());
        chunk.extend_from_slice(&fmt);
        file.splice(12..36, chunk);
        assert_eq!(samples(&file).unwrap(), PCM_BYTES);
    }

    #[test]
    fn hostile_bytes_never_panic() {
        let good = encode(&PCM_BYTES, &[(b"LIST", b"abc")]);
        for cut in 0..good.len() {
            let _ = samples(&good[..cut]);
            let mut f = good.clone();
            for b in [0x00, 0xff, 0x7f, 0x80] {
                f[cut] = b;
                let _ = samples(&f);
            }
        }
    }
}
