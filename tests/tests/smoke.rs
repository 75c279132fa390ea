use zenflow::prelude::*;

#[step]
fn source(#[param] n: i64) -> i64 {
    n
}

#[step(outputs(double, triple))]
fn fan(x: i64) -> (i64, i64) {
    (2 * x, 3 * x)
}

#[step]
async fn add(a: i64, b: i64, ctx: &StepContext) -> Result<i64, std::io::Error> {
    ctx.log(format!("adding {a} and {b}"));
    Ok(a + b)
}

#[pipeline]
fn smoke(n: &i64) {
    let s = source(*n);
    let (d, t) = fan(s);
    add(d, t);
}

#[test]
fn smoke_runs() {
    let dir = tempfile::tempdir().unwrap();
    let stack = zenflow::local_stack_at(dir.path()).unwrap();
    let run = smoke.run(&stack, &5).unwrap();
    assert_eq!(run.artifact::<i64>("add", "output").unwrap(), 25);
    let run2 = smoke.run(&stack, &5).unwrap();
    assert_eq!(run2.cached().len(), 3, "{}", run2.summary());
    println!("{}", smoke.plan(&5).unwrap().to_json());
}
