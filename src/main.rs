//! The `bnc` command line.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

use bnc::codegen;
use bnc::ir::{Graph, Tensor, WeightsSource, interp, printer};
use bnc::passes::{FoldMode, FoldReport, PrintAfter};

const AFTER_HELP: &str = "\
Examples:
  bnc examples/resnet18.nn                      print the folded model as IR
  bnc examples/resnet18.nn -o resnet18.o        compile to an object file + resnet18.h
  cc main.c resnet18.o -o app                   ...and link it into a C program
  bnc examples/tiny.nn --emit=asm               show the generated machine code
  bnc examples/resnet50.nn --emit=plan          show each kernel's path, tiles, buffers
  bnc run examples/tiny.nn                      compile, run on a seeded random input
  bnc run m.nn --input x.npy --output y.npy     run on your own tensors
  bnc run m.nn --threads 4 --timings            split each kernel over 4 threads, time it
  bnc run m.nn --interpret                      use the reference interpreter instead
  bnc import model.onnx -o model.nn             convert ONNX to .nn + model.safetensors
  bnc run model.onnx --repeat 50                run an ONNX model directly, median latency

Exit status:
  0  success
  1  the model, a weights file or an input tensor is wrong (a diagnostic says where)
  2  the command line itself is wrong (unknown option, missing argument)

Environment:
  BNC_MAX_MODEL_BYTES  largest parameters and tensors of one model, in bytes
                       (default 4 GiB of parameters, 16 GiB of tensors)";

/// bnc compiles convolutional networks for inference, removing every Batch-Normalization
/// layer that can be folded away exactly.
///
/// A model is a `.nn` file (see docs/language.md): layers, shapes and where the weights
/// come from. Without a subcommand, bnc checks and folds MODEL, then emits what --emit asks
/// for: the folded model as IR (the default), or code compiled with Cranelift: an object file
/// and its C header, the Cranelift IR, or the machine code. `bnc run` compiles the model and
/// runs it in-process.
#[derive(Parser)]
#[command(
    name = "bnc",
    version,
    after_help = AFTER_HELP,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    #[command(flatten)]
    compile: CompileArgs,

    #[command(flatten)]
    pipeline: PipelineArgs,

    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Args)]
struct CompileArgs {
    /// The model to compile (`.nn`, or `.onnx` imported on the fly).
    #[arg(value_name = "MODEL", required = true)]
    model: Option<PathBuf>,

    /// What to produce. Without --emit, the extension of -o decides: `.o` obj, `.h` header,
    /// `.clif` clif, `.s` or `.asm` asm, `.plan` plan, anything else (and standard output) ir. An explicit
    /// --emit wins over the extension.
    #[arg(long, value_enum, value_name = "KIND")]
    emit: Option<Emit>,

    /// Write the result to FILE instead of standard output (required for obj).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<PathBuf>,

    /// Prefix of the C symbols of obj and header (`PREFIX_forward`,
    /// `PREFIX_workspace_size`). Default: the model's name as a C identifier (characters
    /// other than letters, digits and `_` become `_`).
    #[arg(long, value_name = "PREFIX", value_parser = parse_symbol_prefix)]
    symbol_prefix: Option<String>,

    /// Which x86-64 level the generated code may use: x86-64-v2 (SSE4.2, 128-bit Cranelift
    /// kernels), x86-64-v3 (AVX2 + FMA), x86-64-v4 (AVX-512), native (this machine's
    /// widest), or multi (obj only: all three variants in one object, about 3x larger, and
    /// `PREFIX_forward` picks the widest this CPU runs with cpuid on each call). Default:
    /// x86-64-v3 for obj/header (runs on any AVX2 machine; nothing checks the CPU at load
    /// time), native for clif/asm.
    #[arg(long, value_name = "LEVEL", value_parser = parse_target_cpu)]
    target_cpu: Option<codegen::TargetCpu>,

    /// Plan the kernels for N threads (plan, clif, asm: how each kernel's work splits into
    /// units). Objects always run on one thread; `bnc run --threads N` sets the JIT's.
    #[arg(long, value_name = "N", default_value = "1", value_parser = parse_threads)]
    threads: usize,
}

fn parse_target_cpu(s: &str) -> Result<codegen::TargetCpu, String> {
    s.parse::<codegen::TargetCpu>().map_err(|e| e.to_string())
}

fn parse_symbol_prefix(s: &str) -> Result<String, String> {
    if bnc::is_c_identifier(s) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "`{s}` is not a C identifier (letters, digits and `_`, not starting with a digit)"
        ))
    }
}

fn parse_threads(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("`{s}` is not a thread count (a whole number >= 1)")),
    }
}

/// Which passes run before code is emitted.
#[derive(Args, Clone)]
struct PipelineArgs {
    /// How to fold batch-norms. `egraph` (default): equality saturation over exact rewrites,
    /// guarded by the foldability condition, with DAG-aware extraction; removes the most.
    /// `paper`: the roots/leaves closure of Yvinec et al. (IJCAI 2022), backward then
    /// forward, with compensation. `adjacent`: only into the conv/dense right before, when it
    /// has no other user (what PyTorch and ONNX Runtime do). `none`: keep every BN (as a
    /// per-channel affine map). Every mode is exact.
    #[arg(long, value_enum, default_value_t = Fold::Egraph)]
    fold: Fold,

    /// Run these passes (comma-separated) instead of the default pipeline
    /// `canonicalize,<fold pass>,dce`. An empty list (`--passes=`) leaves the model as parsed.
    /// Passes: canonicalize, fold-adjacent, fold-paper, fold-egraph, dce.
    #[arg(long, value_name = "PASS,...", value_delimiter = ',', num_args = 0..)]
    passes: Option<Vec<String>>,

    /// Print the IR after every pass (to standard error).
    #[arg(long)]
    print_ir_after_all: bool,

    /// Print the IR after the named pass (to standard error); may be repeated.
    #[arg(long, value_name = "PASS")]
    print_ir_after: Vec<String>,

    /// Say what happened to every batch-norm, and what folding saved: `text` (default) or
    /// `json`. Written to standard error, or to standard output by `bnc fold`.
    #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "text", require_equals = true)]
    report: Option<ReportFormat>,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Fold {
    None,
    Adjacent,
    Paper,
    Egraph,
}

impl Fold {
    fn mode(self) -> FoldMode {
        match self {
            Fold::None => FoldMode::None,
            Fold::Adjacent => FoldMode::Adjacent,
            Fold::Paper => FoldMode::Paper,
            Fold::Egraph => FoldMode::Egraph,
        }
    }
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum ReportFormat {
    Text,
    Json,
}

#[derive(Args, Clone)]
struct CommonArgs {
    /// Print how long each phase took (to standard error).
    #[arg(long, global = true)]
    timings: bool,

    /// Colour in diagnostics.
    #[arg(long, value_enum, default_value_t = Color::Auto, global = true)]
    color: Color,

    /// For ONNX models: fix the shape of input NAME (needed when the file leaves a dimension
    /// such as the batch dynamic), e.g. `--input-shape input=1,3,224,224`. May be repeated.
    #[arg(long = "input-shape", value_name = "NAME=D,D,...", global = true)]
    input_shapes: Vec<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a model on input tensors and print or save its outputs.
    Run(RunArgs),
    /// Fold a model's batch-norms and save the result as a new model: `-o folded.nn` writes
    /// `folded.nn` and its weights `folded.safetensors`; prints the fold report.
    Fold(FoldArgs),
    /// Import an ONNX model: `-o model.nn` writes the model as `.nn` and its weights beside
    /// it as `model.safetensors`. (Every command also takes a `.onnx` file directly.)
    Import(ImportArgs),
}

#[derive(Args)]
struct ImportArgs {
    /// The ONNX model to import (`.onnx`).
    #[arg(value_name = "MODEL")]
    model: PathBuf,

    /// Where to write the `.nn` model (default: MODEL with the extension `.nn`); its weights
    /// go beside it as `.safetensors`.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<PathBuf>,
}

#[derive(Args)]
struct FoldArgs {
    /// The model to fold (`.nn` or `.onnx`).
    #[arg(value_name = "MODEL")]
    model: PathBuf,

    /// Where to write the folded model; its weights go beside it as `.safetensors`.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<PathBuf>,

    #[command(flatten)]
    pipeline: PipelineArgs,
}

#[derive(Args)]
struct RunArgs {
    /// The model to run (`.nn` or `.onnx`).
    #[arg(value_name = "MODEL")]
    model: PathBuf,

    /// Which x86-64 level the compiled kernels may use (x86-64-v2, x86-64-v3, x86-64-v4 or
    /// native); a level this machine cannot run is an error. Default: native.
    #[arg(long, value_name = "LEVEL", value_parser = parse_target_cpu, default_value = "native")]
    target_cpu: codegen::TargetCpu,

    /// An input tensor as a `.npy` file (float32 or float64, C order), one per model input in
    /// the order the model declares them, or `NAME=FILE` to name the input. Without any,
    /// each input is filled with seeded pseudo-random values (see --seed).
    #[arg(long = "input", short = 'i', value_name = "[NAME=]FILE")]
    inputs: Vec<String>,

    /// Where to save an output as `.npy`, one per model output in declaration order, or
    /// `NAME=FILE`. Outputs not saved are summarised on standard output.
    #[arg(long = "output", short = 'o', value_name = "[NAME=]FILE")]
    outputs: Vec<String>,

    /// Seed for the random inputs used when no --input is given.
    #[arg(long, default_value_t = 0)]
    seed: u64,

    /// Use the reference interpreter (plain loops, f64 accumulation) instead of compiling
    /// the model to native code with Cranelift (the default). Slow, but the yardstick the
    /// compiled code is tested against.
    #[arg(long)]
    interpret: bool,

    /// Split the work of every compiled kernel over N threads. Any N gives bit-identical
    /// outputs. Ignored by --interpret.
    #[arg(long, value_name = "N", default_value = "1", value_parser = parse_threads)]
    threads: usize,

    /// After the run, time N more runs on the same inputs and print the median, minimum and
    /// mean latency (to standard error).
    #[arg(long, value_name = "N", value_parser = parse_threads)]
    repeat: Option<usize>,

    #[command(flatten)]
    pipeline: PipelineArgs,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Debug)]
enum Emit {
    /// The model after the pass pipeline, printed in the `.nn` language (it parses again),
    /// every attribute explicit, each value's shape in a comment. When folding changed the
    /// weights and -o is given, they are written beside it as `.safetensors`.
    Ir,
    /// An ELF object file for this machine (needs -o): the compiled kernels, the folded
    /// weights in read-only data, and `PREFIX_forward` / `PREFIX_workspace_size`. The C
    /// header declaring them is written beside it (`m.o` -> `m.h`). Links with `cc` alone.
    Obj,
    /// The C header of obj alone: tensor sizes and the two functions.
    Header,
    /// The Cranelift IR of every generated function.
    Clif,
    /// The machine code of every generated function, as Cranelift prints it after register
    /// allocation.
    Asm,
    /// The kernel plan, before any code is generated: each kernel's path (gemm, direct,
    /// tap-masked, channel-vectorised, depthwise, ...), tile and blocking, the nodes it
    /// computes and fuses, its units of work, and where every value lives (offsets and sizes
    /// in floats). Plans for --target-cpu (default native) and --threads.
    Plan,
}

impl Emit {
    /// What `-o path` implies when --emit is not given.
    fn from_output(path: Option<&Path>) -> Emit {
        match path.and_then(|p| p.extension()).and_then(|e| e.to_str()) {
            Some("o") => Emit::Obj,
            Some("h") => Emit::Header,
            Some("clif") => Emit::Clif,
            Some("plan") => Emit::Plan,
            Some("s" | "asm") => Emit::Asm,
            _ => Emit::Ir,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Color {
    Auto,
    Always,
    Never,
}

/// An error already explained to the user; the process exits with status 1.
struct Reported;

/// A problem with the command line itself: explained like clap's own errors, exit status 2.
fn usage_error(message: impl std::fmt::Display) -> ! {
    Cli::command()
        .error(clap::error::ErrorKind::ValueValidation, message)
        .exit()
}

struct Context {
    common: CommonArgs,
}

impl Context {
    fn color(&self) -> bool {
        match self.common.color {
            Color::Always => true,
            Color::Never => false,
            Color::Auto => std::io::stderr().is_terminal(),
        }
    }

    /// Says on stderr that `path` was written (every file bnc writes is named), and whether
    /// it replaced a file that was there.
    fn wrote(&self, path: &Path, replaced: bool) {
        let size = std::fs::metadata(path).map_or(0, |m| m.len());
        let note = if replaced {
            ", replacing the file there"
        } else {
            ""
        };
        eprintln!("wrote {} ({size} bytes{note})", path.display());
    }

    fn fail(&self, message: impl std::fmt::Display) -> Reported {
        eprintln!("error: {message}");
        Reported
    }

    /// Times `f` and reports it under `--timings`.
    fn phase<T>(&self, name: &str, f: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let result = f();
        if self.common.timings {
            eprintln!(
                "timing: {name:<24} {:>10.3} ms",
                start.elapsed().as_secs_f64() * 1e3
            );
        }
        result
    }

    fn load(&self, path: &Path) -> Result<Graph, Reported> {
        let onnx = bnc::frontend::is_onnx(path);
        let mut options = bnc::frontend::onnx::OnnxOptions::default();
        for spec in &self.common.input_shapes {
            if !onnx {
                return Err(self.fail(format!(
                    "--input-shape applies to ONNX models only, and {} is not one",
                    path.display()
                )));
            }
            options
                .parse_input_shape(spec)
                .map_err(|e| self.fail(format!("--input-shape: {e}")))?;
        }
        self.phase("parse+check+weights", || {
            if onnx {
                bnc::frontend::onnx::load(path, &options)
            } else {
                bnc::load_file(path)
            }
        })
        .map_err(|e| {
            eprint!("{}", e.render(self.color()));
            Reported
        })
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let ctx = Context { common: cli.common };
    let result = match cli.command {
        Some(Command::Run(args)) => run(&ctx, &args),
        Some(Command::Fold(args)) => fold(&ctx, &args),
        Some(Command::Import(args)) => import(&ctx, &args),
        None => compile(&ctx, &cli.compile, &cli.pipeline),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Reported) => ExitCode::from(1),
    }
}

/// Runs the pass pipeline the options ask for (through [`bnc::transform`], the one place
/// passes run); returns the new graph, the fold report and the pass timings.
fn transform(
    ctx: &Context,
    graph: &Graph,
    args: &PipelineArgs,
) -> Result<bnc::Transformed, Reported> {
    let mut pipeline = match &args.passes {
        Some(list) => bnc::Pipeline::from_names(list),
        None => bnc::Pipeline::default_for(args.fold.mode()),
    };
    pipeline.print_after = if args.print_ir_after_all {
        PrintAfter::All
    } else if !args.print_ir_after.is_empty() {
        PrintAfter::Passes(args.print_ir_after.clone())
    } else {
        PrintAfter::Never
    };
    let transformed = bnc::transform(graph, &pipeline, &mut |pass, g| {
        eprintln!("// ----- IR after {pass} -----");
        eprint!("{}", printer::print(g));
    })
    .map_err(|e| match e {
        // An unknown pass or a print request for a pass not run: the command line is wrong.
        bnc::Error::Pipeline(message) => usage_error(message),
        e => ctx.fail(e),
    })?;
    if ctx.common.timings {
        for t in &transformed.timings {
            eprintln!(
                "timing: {:<24} {:>10.3} ms",
                format!("pass {}", t.pass),
                t.time.as_secs_f64() * 1e3
            );
        }
    }
    Ok(transformed)
}

fn render_report(report: &FoldReport, format: ReportFormat) -> String {
    match format {
        ReportFormat::Text => report.to_text(),
        ReportFormat::Json => report.to_json() + "\n",
    }
}

/// Writes the graph as IR to `path`, with its weights beside it when they are not the
/// source model's any more.
fn write_model(
    ctx: &Context,
    original: &Graph,
    graph: &mut Graph,
    path: &Path,
) -> Result<(), Reported> {
    if graph.params != original.params {
        let weights = path.with_extension("safetensors");
        let existed = weights.exists();
        ctx.phase("write weights", || bnc::save_weights(graph, &weights))
            .map_err(|e| ctx.fail(format!("cannot write {}: {e}", weights.display())))?;
        ctx.wrote(&weights, existed);
        let file_name = weights
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        graph.weights = WeightsSource::File(file_name);
    }
    write_file(ctx, path, printer::print(graph).as_bytes())
}

fn compile(ctx: &Context, args: &CompileArgs, pipeline: &PipelineArgs) -> Result<(), Reported> {
    let Some(model) = &args.model else {
        return Err(ctx.fail("no model given"));
    };
    let emit = args
        .emit
        .unwrap_or_else(|| Emit::from_output(args.output.as_deref()));
    if emit == Emit::Obj && args.output.is_none() {
        usage_error("--emit=obj writes a binary file: name it with -o FILE.o");
    }
    let original = ctx.load(model)?;
    let transformed = transform(ctx, &original, pipeline)?;
    if let Some(format) = pipeline.report {
        eprint!("{}", render_report(&transformed.report, format));
    }
    let mut graph = transformed.graph;
    let default_level = match emit {
        Emit::Obj | Emit::Header => codegen::TargetCpu::X86_64V3,
        _ => codegen::TargetCpu::Native,
    };
    let options = codegen::Options {
        target_cpu: args.target_cpu.unwrap_or(default_level),
        threads: args.threads,
        ..codegen::Options::default()
    };
    let codegen_failed = |e: codegen::CodegenError| ctx.fail(format!("{}: {e}", model.display()));
    match emit {
        Emit::Ir => match &args.output {
            Some(path) => write_model(ctx, &original, &mut graph, path),
            None => {
                if graph.params != original.params {
                    let stem = model
                        .file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    graph.weights = WeightsSource::File(format!("{stem}.folded.safetensors"));
                    eprintln!(
                        "note: the weights changed; they are written only with -o (the printed weights line names the file -o would write)"
                    );
                }
                write_or_print(ctx, None, printer::print(&graph).as_bytes())
            }
        },
        Emit::Obj | Emit::Header => {
            let prefix = args
                .symbol_prefix
                .clone()
                .unwrap_or_else(|| bnc::c_identifier(&graph.name));
            let (object, header) = ctx
                .phase("codegen (object)", || {
                    codegen::emit_object(&graph, &options, &prefix)
                })
                .map_err(codegen_failed)?;
            if emit == Emit::Header {
                return write_or_print(ctx, args.output.as_deref(), header.as_bytes());
            }
            let path = args.output.as_deref().expect("checked above");
            let header_path = path.with_extension("h");
            if header_path == path {
                return Err(ctx.fail(format!(
                    "{}: the object would overwrite its own header; name the object `.o`",
                    path.display()
                )));
            }
            write_file(ctx, path, &object)?;
            write_file(ctx, &header_path, header.as_bytes())
        }
        Emit::Clif => {
            let text = ctx
                .phase("codegen (clif)", || codegen::clif_text(&graph, &options))
                .map_err(codegen_failed)?;
            write_or_print(ctx, args.output.as_deref(), text.as_bytes())
        }
        Emit::Plan => {
            let text = ctx
                .phase("codegen (plan)", || codegen::plan_text(&graph, &options))
                .map_err(codegen_failed)?;
            write_or_print(ctx, args.output.as_deref(), text.as_bytes())
        }
        Emit::Asm => {
            let text = ctx
                .phase("codegen (asm)", || codegen::asm_text(&graph, &options))
                .map_err(codegen_failed)?;
            write_or_print(ctx, args.output.as_deref(), text.as_bytes())
        }
    }
}

fn write_file(ctx: &Context, path: &Path, bytes: &[u8]) -> Result<(), Reported> {
    let existed = path.exists();
    std::fs::write(path, bytes)
        .map_err(|e| ctx.fail(format!("cannot write {}: {e}", path.display())))?;
    ctx.wrote(path, existed);
    Ok(())
}

/// Writes to `path`, or to standard output without one.
fn write_or_print(ctx: &Context, path: Option<&Path>, bytes: &[u8]) -> Result<(), Reported> {
    match path {
        Some(path) => write_file(ctx, path, bytes),
        None => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            match out.write_all(bytes).and_then(|()| out.flush()) {
                // The reader stopped reading (`bnc run m.nn | head -1`): nothing is wrong.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                result => {
                    result.map_err(|e| ctx.fail(format!("cannot write to standard output: {e}")))
                }
            }
        }
    }
}

fn fold(ctx: &Context, args: &FoldArgs) -> Result<(), Reported> {
    let original = ctx.load(&args.model)?;
    let bnc::Transformed {
        mut graph, report, ..
    } = transform(ctx, &original, &args.pipeline)?;
    if let Some(path) = &args.output {
        write_model(ctx, &original, &mut graph, path)?;
    }
    let report = render_report(&report, args.pipeline.report.unwrap_or(ReportFormat::Text));
    write_or_print(ctx, None, report.as_bytes())
}

fn import(ctx: &Context, args: &ImportArgs) -> Result<(), Reported> {
    if !bnc::frontend::is_onnx(&args.model) {
        return Err(ctx.fail(format!(
            "{}: `bnc import` reads ONNX models (`.onnx`)",
            args.model.display()
        )));
    }
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| args.model.with_extension("nn"));
    let weights = output.with_extension("safetensors");
    if output == args.model || weights == args.model {
        return Err(ctx.fail(format!(
            "{}: the output would overwrite the ONNX model; name it with -o FILE.nn",
            output.display()
        )));
    }
    let mut graph = ctx.load(&args.model)?;
    if let Some(dir) = output.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| ctx.fail(format!("cannot create {}: {e}", dir.display())))?;
    }
    let file_name = weights
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    graph.weights = WeightsSource::File(file_name);
    let existed = weights.exists();
    ctx.phase("write weights", || bnc::save_weights(&graph, &weights))
        .map_err(|e| ctx.fail(format!("cannot write {}: {e}", weights.display())))?;
    ctx.wrote(&weights, existed);
    write_file(ctx, &output, printer::print(&graph).as_bytes())?;
    let bns = graph.count_ops(|op| matches!(op, bnc::ir::Op::BatchNorm { .. }));
    eprintln!(
        "imported {}: {} node(s) ({bns} batch-norm(s)), {} parameter tensor(s) -> {} + {}",
        args.model.display(),
        graph.nodes.len(),
        graph.params.len(),
        output.display(),
        weights.display()
    );
    Ok(())
}

/// Splits `NAME=FILE` into its parts; a bare `FILE` has no name.
fn split_binding(arg: &str) -> (Option<&str>, &str) {
    match arg.split_once('=') {
        Some((name, file)) if !name.is_empty() && !name.contains('/') => (Some(name), file),
        _ => (None, arg),
    }
}

/// Matches `[NAME=]FILE` arguments to the graph's inputs or outputs: named ones by name,
/// bare ones by position.
fn bind<'a>(
    ctx: &Context,
    graph: &Graph,
    ids: &[bnc::ir::ValueId],
    what: &str,
    args: &'a [String],
) -> Result<Vec<Option<&'a str>>, Reported> {
    let names: Vec<&str> = ids
        .iter()
        .map(|&id| graph.value(id).name.as_str())
        .collect();
    let mut files = vec![None; ids.len()];
    if args.len() > ids.len() {
        return Err(ctx.fail(format!(
            "{} {what} file(s) given but the model has {} {what}(s): {}",
            args.len(),
            ids.len(),
            names.join(", ")
        )));
    }
    for (position, arg) in args.iter().enumerate() {
        let (name, file) = split_binding(arg);
        let slot = match name {
            Some(name) => names.iter().position(|&n| n == name).ok_or_else(|| {
                ctx.fail(format!(
                    "the model has no {what} named `{name}` (it has: {})",
                    names.join(", ")
                ))
            })?,
            None => position,
        };
        if files[slot].is_some() {
            return Err(ctx.fail(format!("{what} `{}` is given twice", names[slot])));
        }
        files[slot] = Some(file);
    }
    Ok(files)
}

/// What `bnc run` runs the model with.
enum Engine {
    Compiled(Box<bnc::Model>),
    Interpreted(Graph),
}

fn run(ctx: &Context, args: &RunArgs) -> Result<(), Reported> {
    if args.target_cpu == codegen::TargetCpu::Multi {
        usage_error(
            "--target-cpu=multi builds one object for every x86-64 (`bnc m.nn -o m.o`); \
             `bnc run` runs on this machine: use native (the default) or a level",
        );
    }
    let original = ctx.load(&args.model)?;
    let transformed = transform(ctx, &original, &args.pipeline)?;
    if let Some(format) = args.pipeline.report {
        eprint!("{}", render_report(&transformed.report, format));
    }
    // Compile before reading the inputs, so a model the code generator rejects fails early.
    let engine = if args.interpret {
        Engine::Interpreted(transformed.graph)
    } else {
        let model = ctx
            .phase("compile", || {
                bnc::Model::from_transformed(
                    transformed,
                    &bnc::CompileOptions {
                        threads: args.threads,
                        target_cpu: args.target_cpu,
                        ..bnc::CompileOptions::default()
                    },
                )
            })
            .map_err(|e| ctx.fail(format!("{}: {e}", args.model.display())))?;
        Engine::Compiled(Box::new(model))
    };
    let graph = match &engine {
        Engine::Compiled(model) => model.graph(),
        Engine::Interpreted(graph) => graph,
    };
    let input_files = bind(ctx, graph, &graph.inputs, "input", &args.inputs)?;
    let mut inputs = Vec::new();
    for (&id, file) in graph.inputs.iter().zip(&input_files) {
        let value = graph.value(id);
        let tensor = match file {
            Some(file) => bnc::npy::read(Path::new(file)).map_err(|e| ctx.fail(e))?,
            None => {
                if !args.inputs.is_empty() {
                    return Err(ctx.fail(format!("no file given for input `{}`", value.name)));
                }
                bnc::frontend::try_random_normal(args.seed, &value.name, &value.shape)
                    .map_err(|e| ctx.fail(e))?
            }
        };
        if tensor.shape != value.shape {
            return Err(ctx.fail(format!(
                "{}: input `{}` has shape {} in the model but the file holds {}",
                file.as_deref().unwrap_or("(random input)"),
                value.name,
                printer::dims(&value.shape),
                printer::dims(&tensor.shape)
            )));
        }
        inputs.push(tensor);
    }
    if args.inputs.is_empty() {
        eprintln!(
            "note: no --input given; using seeded random inputs (--seed {})",
            args.seed
        );
    }
    let outputs = match &engine {
        Engine::Compiled(model) => ctx
            .phase("run", || model.run_tensors(&inputs))
            .map_err(|e| ctx.fail(e))?,
        Engine::Interpreted(graph) => ctx
            .phase("interpret", || interp::run(graph, &inputs))
            .map_err(|e| ctx.fail(e))?,
    };
    if let Some(n) = args.repeat {
        let mut times = Vec::with_capacity(n);
        for _ in 0..n {
            let start = Instant::now();
            match &engine {
                Engine::Compiled(model) => model
                    .run_tensors(&inputs)
                    .map(drop)
                    .map_err(|e| ctx.fail(e))?,
                Engine::Interpreted(graph) => interp::run(graph, &inputs)
                    .map(drop)
                    .map_err(|e| ctx.fail(e))?,
            }
            times.push(start.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(f64::total_cmp);
        let median = if n % 2 == 1 {
            times[n / 2]
        } else {
            (times[n / 2 - 1] + times[n / 2]) / 2.0
        };
        let mean = times.iter().sum::<f64>() / n as f64;
        eprintln!(
            "repeat: {n} runs, median {median:.3} ms, min {:.3} ms, mean {mean:.3} ms ({}, {} thread(s))",
            times[0],
            if args.interpret {
                "interpreter"
            } else {
                "compiled"
            },
            if args.interpret { 1 } else { args.threads }
        );
    }
    let output_files = bind(ctx, graph, &graph.outputs, "output", &args.outputs)?;
    for ((&id, tensor), file) in graph.outputs.iter().zip(&outputs).zip(&output_files) {
        let name = &graph.value(id).name;
        match file {
            Some(file) => {
                bnc::npy::write(Path::new(file), tensor).map_err(|e| ctx.fail(e))?;
                ctx.wrote(Path::new(file), false);
            }
            None => write_or_print(
                ctx,
                None,
                format!("{}\n", summarize(name, tensor)).as_bytes(),
            )?,
        }
    }
    Ok(())
}

/// A one-line description of an output: shape, range, and the largest entry of the first
/// row (the predicted class for logits).
fn summarize(name: &str, t: &Tensor) -> String {
    let row = t.shape.iter().skip(1).product::<usize>().max(1);
    let first = &t.data[..row.min(t.data.len())];
    let (argmax, max) = first
        .iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 { (i, v) } else { best }
        });
    let min = t.data.iter().copied().fold(f32::INFINITY, f32::min);
    let max_all = t.data.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let head: Vec<String> = first.iter().take(5).map(|v| format!("{v:.6}")).collect();
    format!(
        "{name}: f32{} min {min:.6} max {:.6} argmax[0] {argmax} ({max:.6}) first [{}{}]",
        printer::dims(&t.shape),
        max_all,
        head.join(", "),
        if first.len() > 5 { ", ..." } else { "" }
    )
}
