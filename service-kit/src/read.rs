//! Reading in large blocks: readers (sockets, decoders) hand out what they have, often a few
//! kilobytes; writers of disk images and hashes want megabytes at a time.

use std::io::{self, Read};

/// Fills `buf` unless the input ends first; returns how much it read.
pub fn read_full(reader: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands out at most 3 bytes a read, as a socket might.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(3).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn fills_the_buffer_from_short_reads_and_stops_at_the_end() {
        let mut reader = Trickle(b"0123456789");
        let mut buf = [0u8; 8];
        assert_eq!(read_full(&mut reader, &mut buf).unwrap(), 8);
        assert_eq!(&buf, b"01234567");
        assert_eq!(read_full(&mut reader, &mut buf).unwrap(), 2);
        assert_eq!(read_full(&mut reader, &mut buf).unwrap(), 0);
    }
}
