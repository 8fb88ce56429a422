//! Finds every `gpubench <command> --flag ...` that a deployment file runs: in exec-form argument
//! lists (a Dockerfile's ENTRYPOINT/CMD, Compose and Kubernetes command/args), in `sh -c` scripts
//! inside them, and in the shell examples of a README.

/// One use of a gpubench command, and the long flags it passes with their values.
#[derive(Debug, Clone, PartialEq)]
pub struct Invocation {
    /// Where it was found, for messages.
    pub source: String,
    pub subcommand: String,
    /// (flag, value): the value is the next word when it does not start with `--`, or the part
    /// after `=`.
    pub flags: Vec<(String, Option<String>)>,
}

impl Invocation {
    pub fn value_of(&self, flag: &str) -> Option<&str> {
        self.flags.iter().find(|(f, _)| f == flag).and_then(|(_, v)| v.as_deref())
    }

    pub fn has(&self, flag: &str) -> bool {
        self.flags.iter().any(|(f, _)| f == flag)
    }
}

const SEPARATORS: &[&str] = &["&&", "||", ";", "|", "do", "then", "else", "done", "fi"];
/// gpubench commands whose first argument is a subcommand.
const NESTED: &[&str] = &["report"];
const GLOBAL_FLAGS: &[&str] = &["-q", "--quiet", "-v", "-vv", "-vvv", "--verbose"];

fn is_gpubench(word: &str) -> bool {
    word == "gpubench" || word.ends_with("/gpubench")
}

/// Splits a shell command line into simple commands (lists of words). Quotes are removed;
/// `;`, `&&`, `||`, `|` and the keywords of `until`/`if` end a command.
pub fn shell_commands(text: &str) -> Vec<Vec<String>> {
    let mut commands = vec![Vec::new()];
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut in_word = false;
    let end_word = |word: &mut String, in_word: &mut bool, commands: &mut Vec<Vec<String>>| {
        if *in_word {
            let w = std::mem::take(word);
            if SEPARATORS.contains(&w.as_str()) {
                commands.push(Vec::new());
            } else if let Some(current) = commands.last_mut() {
                current.push(w);
            }
            *in_word = false;
        }
    };
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => word.push(c),
            None => match c {
                '\'' | '"' => {
                    quote = Some(c);
                    in_word = true;
                }
                '\\' if chars.peek() == Some(&'\n') => {
                    chars.next();
                }
                ';' | '\n' => {
                    end_word(&mut word, &mut in_word, &mut commands);
                    commands.push(Vec::new());
                }
                c if c.is_whitespace() => end_word(&mut word, &mut in_word, &mut commands),
                c => {
                    word.push(c);
                    in_word = true;
                }
            },
        }
    }
    end_word(&mut word, &mut in_word, &mut commands);
    commands.retain(|c| !c.is_empty());
    commands
}

/// Expands an exec-form argument list: an element holding a whole script (`sh -c "..."`) is
/// split into its commands; the other elements stay one command.
pub fn exec_commands(argv: &[String]) -> Vec<Vec<String>> {
    let mut outer = Vec::new();
    let mut scripts = Vec::new();
    for arg in argv {
        if arg.contains(char::is_whitespace) || arg.contains(';') {
            scripts.extend(shell_commands(arg));
        } else {
            outer.push(arg.clone());
        }
    }
    let mut all = vec![outer];
    all.extend(scripts);
    all.retain(|c| !c.is_empty());
    all
}

/// The gpubench invocations in one simple command. `gpubench` counts where it stands in command
/// position: first word, after `--` (`tini --`, `kubectl exec ... --`), or after another
/// `gpubench` (`docker compose exec gpubench gpubench ...`, service then program).
pub fn invocations_in(command: &[String], source: &str) -> Vec<Invocation> {
    let mut found = Vec::new();
    let mut i = 0;
    while i < command.len() {
        let at_command_position = i == 0 || command[i - 1] == "--" || is_gpubench(&command[i - 1]);
        if !(is_gpubench(&command[i]) && at_command_position) {
            i += 1;
            continue;
        }
        let mut j = i + 1;
        while j < command.len() && GLOBAL_FLAGS.contains(&command[j].as_str()) {
            j += 1;
        }
        let Some(sub) = command.get(j) else { break };
        if sub.starts_with('-') || is_gpubench(sub) {
            i = j.max(i + 1);
            continue;
        }
        // Commands with subcommands of their own (`gpubench report merge`) are named by both words.
        let mut sub = sub.clone();
        if NESTED.contains(&sub.as_str()) {
            if let Some(second) = command.get(j + 1).filter(|w| !w.starts_with('-')) {
                sub = format!("{sub} {second}");
                j += 1;
            }
        }
        let mut flags = Vec::new();
        let mut k = j + 1;
        while k < command.len() && command[k] != "--" && !is_gpubench(&command[k]) {
            let word = &command[k];
            if let Some(long) = word.strip_prefix("--").filter(|l| !l.is_empty()) {
                match long.split_once('=') {
                    Some((name, value)) => flags.push((format!("--{name}"), Some(value.to_string()))),
                    None => {
                        let value = command.get(k + 1).filter(|v| !v.starts_with("--")).cloned();
                        flags.push((word.clone(), value));
                    }
                }
            }
            k += 1;
        }
        found.push(Invocation { source: source.to_string(), subcommand: sub, flags });
        i = k;
    }
    found
}

/// The gpubench invocations in the fenced shell blocks of a Markdown file.
pub fn markdown_invocations(markdown: &str, source: &str) -> Vec<Invocation> {
    let mut found = Vec::new();
    let mut block = String::new();
    let mut in_block = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            if in_block {
                for command in shell_commands(&block) {
                    found.extend(invocations_in(&command, source));
                }
                block.clear();
            }
            in_block = !in_block;
            continue;
        }
        if in_block {
            let line = line.trim_start().trim_start_matches("$ ");
            let code = if line.starts_with('#') { "" } else { line.split(" #").next().unwrap_or("") };
            block.push_str(code);
            block.push('\n');
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn exec_form_with_an_init_process() {
        let argv = words("tini -- gpubench serve --host 0.0.0.0 --port 8000 --max-batch-size=4");
        let found = invocations_in(&argv, "x");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].subcommand, "serve");
        assert_eq!(found[0].value_of("--host"), Some("0.0.0.0"));
        assert_eq!(found[0].value_of("--max-batch-size"), Some("4"));
    }

    #[test]
    fn gpubench_as_a_namespace_or_host_is_not_a_command() {
        let cmds = shell_commands("kubectl -n gpubench get pods && curl http://gpubench:8000/ready");
        let found: Vec<_> = cmds.iter().flat_map(|c| invocations_in(c, "x")).collect();
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn scripts_pipelines_and_exec_are_followed() {
        let cmds = shell_commands(
            "kubectl -n gpubench exec deploy/gpubench -- gpubench gpu-check --phase kubernetes\n\
             docker compose exec gpubench gpubench -q gpu-check --phase bare-metal; \
             gpubench load-test --url 'http://localhost:8000/generate' \\\n  --concurrency 6 | tee out",
        );
        let found: Vec<_> = cmds.iter().flat_map(|c| invocations_in(c, "x")).collect();
        let summary: Vec<_> = found.iter().map(|i| (i.subcommand.as_str(), i.flags.len())).collect();
        assert_eq!(summary, vec![("gpu-check", 1), ("gpu-check", 1), ("load-test", 2)]);
        assert_eq!(found[1].value_of("--phase"), Some("bare-metal"));
        assert_eq!(found[2].value_of("--url"), Some("http://localhost:8000/generate"));
    }

    #[test]
    fn sh_c_scripts_in_exec_form_are_split() {
        let argv = vec!["sh".to_string(), "-c".to_string(), "gpubench bench --target a=http://x:1 && echo done".to_string()];
        let found: Vec<_> = exec_commands(&argv).iter().flat_map(|c| invocations_in(c, "x")).collect();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].value_of("--target"), Some("a=http://x:1"));
    }

    #[test]
    fn markdown_blocks_skip_comments_and_prose() {
        let md = "Run gpubench serve --nope in prose.\n```sh\n# gpubench serve --commented\n$ gpubench serve --port 8000  # start\n```\n";
        let found = markdown_invocations(md, "x");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].flags, vec![("--port".to_string(), Some("8000".to_string()))]);
    }
}
