use processhub::prelude::*;

/// A bounded log of any entry type; hubs run the instances it names.
#[distributed(instances(Log<u64>, Log<String>))]
#[derive(Default, Serialize, Deserialize)]
pub struct Log<E> {
    entries: Vec<E>,
}

#[distributed]
impl<E> Log<E>
where
    E: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    pub fn push(&mut self, entry: E) -> usize {
        self.entries.push(entry);
        self.entries.len()
    }

    pub fn last(&self) -> Option<E> {
        self.entries.last().cloned()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

#[allow(dead_code)]
async fn use_it(hub: &Hub) -> Result<(), Box<dyn std::error::Error>> {
    let numbers: LogHandle<u64> = Log::<u64>::start(hub, "n", Log::default()).await?;
    numbers.push(7).await?;
    let words = Log::<String>::handle(hub, "w");
    let _: Option<String> = words.last().await?;
    let _ = numbers.clone();
    Ok(())
}

fn main() {}
