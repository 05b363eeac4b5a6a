//! Reading secrets: from a file, standard input, or a no-echo prompt. Never
//! from an argument (arguments show up in `ps` and shell history).

use std::io::{IsTerminal, Read};

use zeroize::Zeroizing;

use crate::Failure;
use crate::cli::SecretSource;

/// Reads the secret from the chosen source; with none, prompts when
/// standard input is a terminal.
pub fn read(source: &SecretSource, prompt: bool) -> Result<Option<Zeroizing<String>>, Failure> {
    if let Some(path) = &source.secret_file {
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|e| Failure::Usage(format!("secret file {}: {e}", path.display())))?,
        );
        return Ok(Some(trim_one_newline(text)));
    }
    if source.secret_stdin {
        let mut text = Zeroizing::new(String::new());
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| Failure::Usage(format!("reading the secret from standard input: {e}")))?;
        return Ok(Some(trim_one_newline(text)));
    }
    if !prompt {
        return Ok(None);
    }
    if !std::io::stdin().is_terminal() {
        return Err(Failure::Usage(
            "no secret given: use --secret-file FILE or --secret-stdin (secrets are never taken from arguments)".into(),
        ));
    }
    let entered = rpassword::prompt_password("secret (not echoed): ")
        .map_err(|e| Failure::Usage(format!("reading the secret: {e}")))?;
    Ok(Some(Zeroizing::new(entered)))
}

fn trim_one_newline(text: Zeroizing<String>) -> Zeroizing<String> {
    let trimmed = text.strip_suffix("\r\n").or_else(|| text.strip_suffix('\n')).unwrap_or(&text);
    Zeroizing::new(trimmed.to_owned())
}
