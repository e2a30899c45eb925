//! bnc: a compiler for convolutional-network inference that removes Batch-Normalization
//! layers exactly. This crate is the facade a Rust host uses and the home of the `bnc`
//! command line.
//!
//! # Compiling and running a model
//!
//! [`Model`] loads a `.nn` file, runs the default pass pipeline (canonicalize, fold the
//! batch-norms as [`CompileOptions::fold`] says, remove dead code) and JIT-compiles the result
//! with Cranelift:
//!
//! ```no_run
//! use bnc::{CompileOptions, Model};
//!
//! # fn main() -> Result<(), bnc::Error> {
//! let model = Model::from_file("examples/resnet18.nn", &CompileOptions::default())?;
//! let input = vec![0.5f32; model.input_shapes()[0].iter().product()];
//! let mut logits = vec![0f32; model.output_shapes()[0].iter().product()];
//! model.run(&[&input], &mut [&mut logits])?;
//! println!("{} batch-norms folded away", model.report().folded());
//! # Ok(())
//! # }
//! ```
//!
//! A [`Model`] is `Send + Sync`: share it between threads (each concurrent [`Model::run`] takes
//! its own workspace from an internal cache, or pass one with [`Model::run_with_workspace`]).
//! With [`CompileOptions::threads`] > 1 each kernel's work is additionally split over a
//! thread pool owned by the model; results are bit-identical whatever the thread count.
//!
//! # Lower levels
//!
//! [`transform`] runs any pass list (what `bnc --passes=...` does) and returns the new graph,
//! the fold report and per-pass timings; [`Model::from_transformed`] compiles its result.
//! The crates underneath are re-exported: [`ir`] (graph, interpreter, printer), [`frontend`]
//! (the `.nn` language), [`passes`] and [`codegen`] (also ahead-of-time object files,
//! [`codegen::emit_object`]).

use std::path::Path;
use std::time::{Duration, Instant};

pub use bnc_codegen as codegen;
pub use bnc_frontend as frontend;
pub use bnc_ir as ir;
pub use bnc_passes as passes;

pub mod npy;
mod save;

pub use save::save_weights;

pub use bnc_codegen::{CodegenError, Workspace};
pub use bnc_frontend::{Error as FrontendError, load_file, load_str};
pub use bnc_ir::{Graph, Shape, Tensor};
pub use bnc_passes::manager::PassTiming;
pub use bnc_passes::{FoldMode, FoldReport, PassError, PrintAfter};

/// Everything that can go wrong between a model file and its outputs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The model, its weights or its shapes are wrong (shown as `file:line:col: message`;
    /// [`FrontendError::render`] gives the full diagnostic with the source line).
    #[error("{}", .0.plain())]
    Frontend(#[from] FrontendError),
    /// The pass list is wrong: an unknown pass, or a print request for a pass not in it.
    #[error("{0}")]
    Pipeline(String),
    /// A pass failed or produced invalid IR (a bug in bnc).
    #[error("internal error: {0}")]
    Pass(#[from] PassError),
    /// The code generator rejected the graph or the host.
    #[error("{0}")]
    Codegen(CodegenError),
    /// `run` got a different number of inputs or outputs than the model has.
    #[error("the model has {expected} {what}(s) ({names}), but {got} were given")]
    Count {
        what: &'static str,
        expected: usize,
        got: usize,
        names: String,
    },
    /// An input or output buffer does not have as many elements as the model's tensor.
    #[error(
        "{what} `{name}` has shape {shape:?} ({expected} elements), but a buffer of {got} was given"
    )]
    Length {
        what: &'static str,
        name: String,
        shape: Shape,
        expected: usize,
        got: usize,
    },
    /// A tensor given to [`Model::run_tensors`] has another shape than the model's input.
    #[error("input `{name}` has shape {expected:?} in the model, but the tensor has {got:?}")]
    Shape {
        name: String,
        expected: Shape,
        got: Shape,
    },
}

/// Which passes [`transform`] runs, and after which of them it shows the IR.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Pipeline {
    /// Pass names in order (see [`passes::manager::PASSES`]); empty names are ignored, and
    /// an empty list leaves the graph as it is.
    pub passes: Vec<String>,
    /// When to hand the IR to `on_print`.
    pub print_after: PrintAfter,
}

impl Pipeline {
    /// The default pipeline for a fold mode: `canonicalize,<fold pass>,dce`.
    pub fn default_for(mode: FoldMode) -> Pipeline {
        Pipeline::from_names(passes::default_pipeline(mode))
    }

    /// Exactly these passes.
    pub fn from_names<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> Pipeline {
        Pipeline {
            passes: names.into_iter().map(|n| n.as_ref().to_string()).collect(),
            print_after: PrintAfter::Never,
        }
    }

    /// The pass names that will run.
    pub fn names(&self) -> Vec<&str> {
        self.passes
            .iter()
            .map(String::as_str)
            .filter(|n| !n.is_empty())
            .collect()
    }
}

/// What [`transform`] produced.
#[derive(Clone, Debug)]
pub struct Transformed {
    /// The graph after the pipeline.
    pub graph: Graph,
    /// What happened to every batch-norm, and the cost before and after.
    pub report: FoldReport,
    /// How long each pass took, in pipeline order.
    pub timings: Vec<PassTiming>,
}

/// Runs `pipeline` on a copy of `graph`. `on_print(pass, graph)` sees the IR after the passes
/// `pipeline.print_after` names. This is the one place bnc runs passes: the command line and
/// [`Model`] both come here.
pub fn transform(
    graph: &Graph,
    pipeline: &Pipeline,
    on_print: &mut dyn FnMut(&str, &Graph),
) -> Result<Transformed, Error> {
    let names = pipeline.names();
    let passes = passes::resolve(&names).map_err(Error::Pipeline)?;
    if let PrintAfter::Passes(wanted) = &pipeline.print_after {
        for name in wanted {
            if !names.contains(&name.as_str()) {
                return Err(Error::Pipeline(format!(
                    "--print-ir-after={name}: `{name}` is not in the pipeline ({})",
                    names.join(",")
                )));
            }
        }
    }
    let mut out = graph.clone();
    let mut ctx = passes::PassContext::default();
    let timings =
        passes::run_pipeline(&mut out, &passes, &mut ctx, &pipeline.print_after, on_print)?;
    ctx.report.measure(graph, &out);
    Ok(Transformed {
        graph: out,
        report: ctx.report,
        timings,
    })
}

/// How [`Model`] compiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompileOptions {
    /// How batch-norms are folded (the default is the passes crate's default mode).
    pub fold: FoldMode,
    /// Threads each kernel's work is split over; 1 (the default) runs on the calling thread.
    pub threads: usize,
    /// Which instructions the kernels may use (default: the host's widest).
    pub target_cpu: codegen::TargetCpu,
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions {
            fold: FoldMode::default(),
            threads: 1,
            target_cpu: codegen::TargetCpu::Native,
        }
    }
}

/// A model compiled to native code, ready to run. `Send + Sync`.
pub struct Model {
    compiled: codegen::CompiledModel,
    graph: Graph,
    report: FoldReport,
    pass_timings: Vec<PassTiming>,
    compile_time: Duration,
    threads: usize,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("name", &self.graph.name)
            .field("inputs", &self.compiled.input_shapes())
            .field("outputs", &self.compiled.output_shapes())
            .field("kernels", &self.compiled.kernel_count())
            .field("threads", &self.threads)
            .finish_non_exhaustive()
    }
}

impl Model {
    /// Loads a `.nn` model (and its weights), folds it and compiles it.
    pub fn from_file(path: impl AsRef<Path>, options: &CompileOptions) -> Result<Model, Error> {
        Model::from_graph(&load_file(path.as_ref())?, options)
    }

    /// Folds `graph` with the default pipeline for `options.fold` and compiles it.
    pub fn from_graph(graph: &Graph, options: &CompileOptions) -> Result<Model, Error> {
        let transformed = transform(graph, &Pipeline::default_for(options.fold), &mut |_, _| {})?;
        Model::from_transformed(transformed, options)
    }

    /// Compiles the result of [`transform`] as it is (no further passes).
    /// `options.fold` is not used: the passes have run.
    pub fn from_transformed(
        transformed: Transformed,
        options: &CompileOptions,
    ) -> Result<Model, Error> {
        let threads = options.threads.max(1);
        let start = Instant::now();
        let compiled = codegen::compile(
            &transformed.graph,
            &codegen::Options {
                threads,
                target_cpu: options.target_cpu,
                ..codegen::Options::default()
            },
        )
        .map_err(Error::Codegen)?;
        Ok(Model {
            compiled,
            graph: transformed.graph,
            report: transformed.report,
            pass_timings: transformed.timings,
            compile_time: start.elapsed(),
            threads,
        })
    }

    /// The model's name (from its `.nn` file).
    pub fn name(&self) -> &str {
        &self.graph.name
    }
    /// Shapes of the inputs, in declaration order (row-major f32, NCHW for images).
    pub fn input_shapes(&self) -> Vec<Shape> {
        self.compiled.input_shapes()
    }
    /// Shapes of the outputs, in declaration order.
    pub fn output_shapes(&self) -> Vec<Shape> {
        self.compiled.output_shapes()
    }
    pub fn input_names(&self) -> Vec<String> {
        self.compiled.input_names()
    }
    pub fn output_names(&self) -> Vec<String> {
        self.compiled.output_names()
    }
    /// The graph that was compiled (after folding).
    pub fn graph(&self) -> &Graph {
        &self.graph
    }
    /// What folding did to every batch-norm.
    pub fn report(&self) -> &FoldReport {
        &self.report
    }
    /// How long each pass took.
    pub fn pass_timings(&self) -> &[PassTiming] {
        &self.pass_timings
    }
    /// How long code generation took (planning, packing weights, Cranelift, linking).
    pub fn compile_time(&self) -> Duration {
        self.compile_time
    }
    /// Threads each kernel is split over.
    pub fn threads(&self) -> usize {
        self.threads
    }
    /// The compiled code itself: kernel names, FLOPs, workspace and weight sizes, profiling.
    pub fn compiled(&self) -> &codegen::CompiledModel {
        &self.compiled
    }
    /// A workspace for [`Model::run_with_workspace`] (one per concurrent caller).
    pub fn new_workspace(&self) -> Workspace {
        self.compiled.new_workspace()
    }

    /// Runs the model: `inputs[i]` holds input `i` row-major and `outputs[i]` receives output
    /// `i`; each slice must have exactly as many elements as its tensor.
    pub fn run(&self, inputs: &[&[f32]], outputs: &mut [&mut [f32]]) -> Result<(), Error> {
        self.check(inputs, outputs)?;
        self.compiled.run(inputs, outputs).map_err(Error::Codegen)
    }

    /// [`Model::run`] with a caller-owned workspace (from [`Model::new_workspace`]).
    pub fn run_with_workspace(
        &self,
        workspace: &mut Workspace,
        inputs: &[&[f32]],
        outputs: &mut [&mut [f32]],
    ) -> Result<(), Error> {
        self.check(inputs, outputs)?;
        self.compiled
            .run_with_workspace(workspace, inputs, outputs)
            .map_err(Error::Codegen)
    }

    /// Runs the model on tensors (shapes checked exactly) and returns the outputs.
    pub fn run_tensors(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, Error> {
        let names = self.input_names();
        let shapes = self.input_shapes();
        if inputs.len() != shapes.len() {
            return Err(count("input", &names, inputs.len()));
        }
        for ((t, name), shape) in inputs.iter().zip(&names).zip(&shapes) {
            if &t.shape != shape {
                return Err(Error::Shape {
                    name: name.clone(),
                    expected: shape.clone(),
                    got: t.shape.clone(),
                });
            }
        }
        let mut outputs: Vec<Tensor> = self
            .output_shapes()
            .into_iter()
            .map(|shape| {
                let bytes = shape.iter().product::<usize>().saturating_mul(4);
                Tensor::try_zeros(shape).ok_or(Error::Codegen(CodegenError::OutOfMemory {
                    bytes,
                    what: "outputs",
                }))
            })
            .collect::<Result<_, _>>()?;
        let ins: Vec<&[f32]> = inputs.iter().map(|t| t.data.as_slice()).collect();
        let mut outs: Vec<&mut [f32]> = outputs.iter_mut().map(|t| t.data.as_mut_slice()).collect();
        self.run(&ins, &mut outs)?;
        Ok(outputs)
    }

    /// Checks counts and lengths, naming the offending tensor.
    fn check(&self, inputs: &[&[f32]], outputs: &[&mut [f32]]) -> Result<(), Error> {
        for (what, names, shapes, lens) in [
            (
                "input",
                self.input_names(),
                self.input_shapes(),
                inputs.iter().map(|s| s.len()).collect::<Vec<_>>(),
            ),
            (
                "output",
                self.output_names(),
                self.output_shapes(),
                outputs.iter().map(|s| s.len()).collect(),
            ),
        ] {
            if lens.len() != shapes.len() {
                return Err(count(what, &names, lens.len()));
            }
            for ((name, shape), got) in names.into_iter().zip(shapes).zip(lens) {
                let expected = shape.iter().product();
                if got != expected {
                    return Err(Error::Length {
                        what,
                        name,
                        shape,
                        expected,
                        got,
                    });
                }
            }
        }
        Ok(())
    }
}

fn count(what: &'static str, names: &[String], got: usize) -> Error {
    Error::Count {
        what,
        expected: names.len(),
        got,
        names: names.join(", "),
    }
}

/// `name` as a C identifier, for symbol prefixes: characters other than ASCII letters,
/// digits and `_` become `_`, and a leading digit (or an empty name) gets a `_`/`model`
/// prefix. `resnet-18` → `resnet_18`, `3x3` → `_3x3`.
pub fn c_identifier(name: &str) -> String {
    let mut id: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if id.is_empty() {
        id = "model".to_string();
    } else if id.starts_with(|c: char| c.is_ascii_digit()) {
        id.insert(0, '_');
    }
    id
}

/// Whether `s` is a valid C identifier (what [`codegen::emit_object`] accepts as a prefix).
pub fn is_c_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Model>();
    assert_send_sync::<Error>();
};
