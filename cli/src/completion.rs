//! Shell completion scripts generated from the clap command tree at run time (bash, zsh
//! through bashcompinit, fish): subcommands and flags for every command path.

use clap::{Args, Command, ValueEnum};

use crate::error::Result;

#[derive(Args, Debug)]
pub struct CompletionArgs {
    /// The shell to generate the script for
    pub shell: Shell,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// Every command path (`berth`, `berth network`, …) with its subcommands and flags.
struct Node {
    path: Vec<String>,
    subcommands: Vec<String>,
    flags: Vec<String>,
}

fn collect(command: &Command, path: Vec<String>, out: &mut Vec<Node>) {
    let mut subcommands = Vec::new();
    for sub in command.get_subcommands() {
        if sub.is_hide_set() {
            continue;
        }
        subcommands.push(sub.get_name().to_string());
        subcommands.extend(sub.get_all_aliases().map(str::to_string));
    }
    let mut flags = Vec::new();
    for arg in command.get_arguments() {
        if arg.is_hide_set() {
            continue;
        }
        if let Some(long) = arg.get_long() {
            flags.push(format!("--{long}"));
        }
        if let Some(short) = arg.get_short() {
            flags.push(format!("-{short}"));
        }
    }
    out.push(Node {
        path: path.clone(),
        subcommands,
        flags,
    });
    for sub in command.get_subcommands() {
        let mut child = path.clone();
        child.push(sub.get_name().to_string());
        collect(sub, child.clone(), out);
        for alias in sub.get_all_aliases() {
            let mut aliased = path.clone();
            aliased.push(alias.to_string());
            collect(sub, aliased, out);
        }
    }
}

pub fn generate(command: &mut Command, shell: Shell) -> Result<String> {
    command.build();
    let mut nodes = Vec::new();
    let name = command.get_name().to_string();
    collect(command, vec![name.clone()], &mut nodes);
    Ok(match shell {
        Shell::Bash => bash(&name, &nodes),
        Shell::Zsh => format!(
            "#compdef {name}\nautoload -U +X bashcompinit && bashcompinit\n{}",
            bash(&name, &nodes)
        ),
        Shell::Fish => fish(&name, &nodes),
    })
}

fn bash(name: &str, nodes: &[Node]) -> String {
    let function = format!("_{}", name.replace('-', "_"));
    let mut script = format!(
        "# bash completion for {name}\n{function}() {{\n    local cur=\"${{COMP_WORDS[COMP_CWORD]}}\"\n    local path=\"{name}\"\n    local i word\n    for ((i = 1; i < COMP_CWORD; i++)); do\n        word=\"${{COMP_WORDS[i]}}\"\n        case \"$word\" in -*) continue ;; esac\n        if {function}_words \"$path $word\" >/dev/null; then\n            path=\"$path $word\"\n        fi\n    done\n    local words\n    words=$({function}_words \"$path\")\n    if [[ \"$cur\" == -* ]]; then\n        words=$({function}_flags \"$path\")\n    fi\n    COMPREPLY=($(compgen -W \"$words\" -- \"$cur\"))\n}}\n\n"
    );
    script.push_str(&format!("{function}_words() {{\n    case \"$1\" in\n"));
    for node in nodes {
        script.push_str(&format!(
            "        \"{}\") echo \"{}\" ;;\n",
            node.path.join(" "),
            node.subcommands.join(" ")
        ));
    }
    script.push_str("        *) return 1 ;;\n    esac\n}\n\n");
    script.push_str(&format!("{function}_flags() {{\n    case \"$1\" in\n"));
    for node in nodes {
        script.push_str(&format!(
            "        \"{}\") echo \"{}\" ;;\n",
            node.path.join(" "),
            node.flags.join(" ")
        ));
    }
    script.push_str("    esac\n}\n\n");
    script.push_str(&format!("complete -F {function} {name}\n"));
    script
}

fn fish(name: &str, nodes: &[Node]) -> String {
    let mut script = format!("# fish completion for {name}\n");
    for node in nodes {
        let condition = match node.path.len() {
            1 => "__fish_use_subcommand".to_string(),
            _ => format!(
                "__fish_seen_subcommand_from {}",
                node.path[node.path.len() - 1]
            ),
        };
        for sub in &node.subcommands {
            script.push_str(&format!(
                "complete -c {name} -f -n '{condition}' -a '{sub}'\n"
            ));
        }
        for flag in &node.flags {
            let option = match flag.strip_prefix("--") {
                Some(long) => format!("-l {long}"),
                None => format!("-s {}", flag.trim_start_matches('-')),
            };
            script.push_str(&format!("complete -c {name} -n '{condition}' {option}\n"));
        }
    }
    script
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn bash_script_lists_subcommands_and_flags() {
        let script = generate(&mut crate::Cli::command(), Shell::Bash).expect("generates");
        assert!(script.contains("complete -F _berth berth"));
        let top = script
            .lines()
            .find(|l| l.trim_start().starts_with("\"berth\") echo"))
            .expect("top level entry");
        for sub in ["run", "ps", "network", "volume", "completion"] {
            assert!(
                top.split_whitespace().any(|w| w.trim_matches('"') == sub),
                "{sub} in {top}"
            );
        }
        assert!(script.contains(
            "\"berth network\") echo \"ls list create rm remove inspect connect disconnect prune"
        ));
        let run_flags = script
            .lines()
            .find(|l| l.contains("\"berth run\") echo \"--"))
            .expect("run flags");
        assert!(run_flags.contains("--publish") && run_flags.contains("-p"));
    }

    #[test]
    fn fish_and_zsh_scripts() {
        let fish = generate(&mut crate::Cli::command(), Shell::Fish).expect("generates");
        assert!(fish.contains("complete -c berth -f -n '__fish_use_subcommand' -a 'run'"));
        assert!(fish.contains("complete -c berth -n '__fish_seen_subcommand_from ps' -l all"));
        let zsh = generate(&mut crate::Cli::command(), Shell::Zsh).expect("generates");
        assert!(zsh.starts_with("#compdef berth\n"));
    }
}
