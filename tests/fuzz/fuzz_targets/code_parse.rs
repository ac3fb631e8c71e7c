//! Whatever a person (or a bot) types into the code field: parsing never
//! panics, and whatever parses is canonical and parses again to itself.
#![no_main]

use invitations::domain::code::InvitationCode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else { return };
    for prefix in ["", "INV"] {
        if let Ok(code) = InvitationCode::parse(input, prefix) {
            let again = InvitationCode::parse(&code.display(prefix), prefix).expect("display form parses");
            assert_eq!(again.as_str(), code.as_str());
        }
    }
});
