use processhub::prelude::*;

#[distributed]
#[derive(Default, Serialize, Deserialize)]
pub struct Tally {
    n: u64,
}

#[distributed]
impl Tally {
    pub fn add(&mut self, by: u64) -> u64 {
        self.n += by;
        self.n
    }
    pub async fn slow_get(&self) -> u64 {
        self.n
    }
    pub fn get(&self) -> u64 {
        self.n
    }
    pub fn several(&mut self, a: u64, b: String, c: Vec<u8>) -> (u64, String, usize) {
        (self.n + a, b, c.len())
    }
    pub fn nothing(&mut self) {}
    pub fn fallible(&self, ok: bool) -> Result<u64, String> {
        if ok { Ok(self.n) } else { Err("no".into()) }
    }
}

fn assert_handle<T: Clone + Send + Sync + std::fmt::Debug + 'static>() {}

async fn use_it(hub: &Hub) -> Result<(), Box<dyn std::error::Error>> {
    let t: TallyHandle = Tally::start(hub, "user-42", Tally::default()).await?;
    let _: u64 = t.add(5).await?;
    let _: u64 = Tally::handle(hub, "user-42").slow_get().await?;
    let _: (u64, String, usize) = t.several(1, "x".into(), vec![]).await?;
    let _: () = t.nothing().await?;
    let _: Result<u64, String> = t.fallible(true).await?;
    let _: Vec<Result<TallyHandle, StartError>> =
        Tally::start_many(hub, vec![("a".into(), Tally::default())]).await;
    Tally::stop(hub, t.id()).await?;
    Ok(())
}

fn main() {
    assert_handle::<TallyHandle>();
    let _ = use_it;
}
