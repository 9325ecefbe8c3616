use processhub::prelude::*;

// One method with a borrowed argument: its error is the only one. The handle keeps
// every other method, and a stub of the bad one, so no call site adds an error.
#[distributed]
#[derive(Default, Serialize, Deserialize)]
pub struct Cart {
    items: Vec<String>,
}

#[distributed]
impl Cart {
    pub fn add(&mut self, item: &str) -> usize {
        self.items.push(item.to_string());
        self.items.len()
    }

    pub fn count(&self) -> usize {
        self.items.len()
    }
}

async fn shop(hub: Hub) -> Result<usize, CallError> {
    let cart = Cart::handle(&hub, "cart-1");
    cart.add("apple").await?;
    cart.count().await
}

fn main() {
    let _ = shop;
}
