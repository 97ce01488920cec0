//! The stable error codes. A code never changes meaning once released; each has a page in
//! `docs/errors/<CODE>.md` (a test keeps the two in step).

macro_rules! codes {
    ($($variant:ident = $code:literal, $title:literal;)*) => {
        /// A stable diagnostic code, printed as `error[LB0xxx]`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Code { $($variant),* }

        impl Code {
            pub const ALL: &'static [Code] = &[$(Code::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self { $(Code::$variant => $code),* }
            }

            /// The code's docs page (docs/errors/<CODE>.md), built in for `lifeboat explain`.
            pub fn docs(self) -> &'static str {
                match self { $(Code::$variant => include_str!(concat!("../../docs/errors/", $code, ".md"))),* }
            }

            /// Whether the code is a warning: reported, and the runbook still valid.
            pub fn is_warning(self) -> bool {
                matches!(self, Code::UnquotedValue)
            }

            /// `error` or `warning`, as diagnostics say it.
            pub fn severity(self) -> &'static str {
                if self.is_warning() { "warning" } else { "error" }
            }

            /// One line saying what the code is about; the heading of its docs page.
            pub fn title(self) -> &'static str {
                match self { $(Code::$variant => $title),* }
            }
        }
    };
}

codes! {
    YamlSyntax = "LB0001", "The file is not valid YAML";
    InputLimit = "LB0002", "The input exceeds a size or expansion limit";
    NotOneDocument = "LB0003", "A runbook file holds exactly one YAML document";
    NotText = "LB0004", "The file is not UTF-8 text";
    ReadFailed = "LB0005", "The file or folder could not be read";
    UnsupportedYaml = "LB0006", "YAML that lifeboat does not read: a tag, or a number JSON cannot hold";
    HiddenText = "LB0007", "A character that changes how the runbook is shown";
    UnknownField = "LB0010", "Unknown field";
    MissingField = "LB0011", "A required field is missing";
    WrongType = "LB0012", "A value has the wrong type";
    InvalidValue = "LB0013", "A value is not one of those allowed";
    UnsupportedVersion = "LB0014", "Unsupported apiVersion or kind";
    DuplicateStepId = "LB0101", "Two steps have the same id";
    UnknownStep = "LB0102", "`needs` names a step that does not exist";
    DependencyCycle = "LB0103", "The steps' `needs` form a cycle";
    UnknownAction = "LB0104", "Unknown action";
    InvalidDuration = "LB0105", "A duration does not parse";
    NothingToCompensate = "LB0106", "`compensate` on a step whose action cannot be compensated";
    UnknownConnection = "LB0107", "A step names a connection that is not declared";
    WrongConnectionKind = "LB0108", "A step names a connection of the wrong kind";
    InvalidVersion = "LB0109", "`metadata.version` is not a semantic version";
    InvalidRetry = "LB0110", "A retry policy is inconsistent";
    ExactlyOne = "LB0111", "A secret or connection must have exactly one source or kind";
    SteadyStateWrites = "LB0112", "A drill's steady-state check uses an action that changes things";
    CalledRunbook = "LB0114", "A runbook that `action: runbook` calls cannot be used";
    NotInHandler = "LB0113", "`on_failure` and `finally` steps cannot wait for an answer or be undone";
    TemplateSyntax = "LB0120", "A template or expression does not parse";
    UnknownName = "LB0121", "A template refers to a name that does not exist";
    NotUpstream = "LB0122", "A template reads the outputs of a step that does not run before it";
    UnknownOutput = "LB0123", "A template reads an output the action does not produce";
    TemplateRender = "LB0124", "A template fails to render with the given params";
    SecretByOtherName = "LB0125", "A template reads a secret's value by another name";
    TemplateNeverRenders = "LB0126", "A template can never render, whatever the values";
    UnquotedValue = "LB0127", "A value is pasted into a script or SQL unquoted";
    ParamDefinition = "LB0130", "A param's default or enum does not fit its type";
    UnknownParam = "LB0131", "A param given on the command line is not declared";
    MissingParam = "LB0132", "A required param was not given";
    BadParamValue = "LB0133", "A param value does not fit the param's type";
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
