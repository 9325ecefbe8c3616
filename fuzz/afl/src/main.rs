//! AFL++ driver: every input runs through processhub's fuzz targets (the codec under
//! both frame limits, the frame decoder, the handshake's proof check, and the engine's
//! registry-push, start, stop and claim handlers). See the README's Security section.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        processhub::__fuzz::run(data);
    });
}
