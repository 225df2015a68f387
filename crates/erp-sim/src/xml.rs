//! A minimal XML tree built with quick-xml, enough to read SOAP requests by local element names
//! (namespace prefixes differ between clients, so they are ignored).

use quick_xml::Reader;
use quick_xml::events::Event;

/// An element: local name, attributes (local names), children and concatenated text.
#[derive(Debug, Clone, Default)]
pub(crate) struct Element {
    pub(crate) name: String,
    pub(crate) attrs: Vec<(String, String)>,
    pub(crate) children: Vec<Element>,
    pub(crate) text: String,
}

fn local(name: &[u8]) -> String {
    let name = String::from_utf8_lossy(name);
    match name.rsplit_once(':') {
        Some((_, local)) => local.to_owned(),
        None => name.into_owned(),
    }
}

impl Element {
    /// Parses a document and returns its root element.
    pub(crate) fn parse(text: &str) -> Result<Element, String> {
        let mut reader = Reader::from_str(text);
        let mut stack: Vec<Element> = Vec::new();
        let mut root: Option<Element> = None;
        loop {
            let event = reader.read_event().map_err(|e| format!("xml: {e}"))?;
            match event {
                Event::Start(start) => {
                    stack.push(Self::open(&start)?);
                }
                Event::Empty(start) => {
                    let element = Self::open(&start)?;
                    Self::close(&mut stack, &mut root, element);
                }
                Event::End(_) => {
                    let element = stack.pop().ok_or("xml: unbalanced end tag")?;
                    Self::close(&mut stack, &mut root, element);
                }
                Event::Text(t) => {
                    if let Some(top) = stack.last_mut() {
                        let decoded = t.decode().map_err(|e| format!("xml: {e}"))?;
                        let unescaped = quick_xml::escape::unescape(&decoded)
                            .map_err(|e| format!("xml: {e}"))?;
                        top.text.push_str(&unescaped);
                    }
                }
                Event::CData(c) => {
                    if let Some(top) = stack.last_mut() {
                        top.text.push_str(&String::from_utf8_lossy(&c));
                    }
                }
                Event::GeneralRef(r) => {
                    if let Some(top) = stack.last_mut() {
                        let name = String::from_utf8_lossy(&r);
                        let resolved = match name.as_ref() {
                            "amp" => "&".to_owned(),
                            "lt" => "<".to_owned(),
                            "gt" => ">".to_owned(),
                            "quot" => "\"".to_owned(),
                            "apos" => "'".to_owned(),
                            other => {
                                let code = other
                                    .strip_prefix("#x")
                                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                                    .or_else(|| {
                                        other.strip_prefix('#').and_then(|d| d.parse().ok())
                                    });
                                match code.and_then(char::from_u32) {
                                    Some(c) => c.to_string(),
                                    None => return Err(format!("xml: unknown entity &{other};")),
                                }
                            }
                        };
                        top.text.push_str(&resolved);
                    }
                }
                Event::Eof => break,
                _ => {}
            }
        }
        if !stack.is_empty() {
            return Err("xml: unclosed elements".to_owned());
        }
        root.ok_or_else(|| "xml: no root element".to_owned())
    }

    fn open(start: &quick_xml::events::BytesStart<'_>) -> Result<Element, String> {
        let mut element = Element {
            name: local(start.name().as_ref()),
            ..Element::default()
        };
        for attr in start.attributes() {
            let attr = attr.map_err(|e| format!("xml: {e}"))?;
            let value = attr.unescape_value().map_err(|e| format!("xml: {e}"))?;
            element
                .attrs
                .push((local(attr.key.as_ref()), value.into_owned()));
        }
        Ok(element)
    }

    fn close(stack: &mut [Element], root: &mut Option<Element>, element: Element) {
        match stack.last_mut() {
            Some(parent) => parent.children.push(element),
            None => *root = Some(element),
        }
    }

    /// First child with this local name.
    pub(crate) fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// All children with this local name.
    pub(crate) fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// Trimmed text of the first child with this name ("" when absent).
    pub(crate) fn text_of(&self, name: &str) -> String {
        self.child(name)
            .map(|c| c.text.trim().to_owned())
            .unwrap_or_default()
    }

    /// An attribute by local name.
    pub(crate) fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Depth-first search for the first element with this local name.
    pub(crate) fn find(&self, name: &str) -> Option<&Element> {
        if self.name == name {
            return Some(self);
        }
        self.children.iter().find_map(|c| c.find(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_local_names_and_entities() {
        let root = Element::parse(
            "<a:Env xmlns:a='x'><a:Body><B c='1'>t &amp; u</B><B/></a:Body></a:Env>",
        );
        let root = root.unwrap_or_default();
        let body = root.child("Body").cloned().unwrap_or_default();
        assert_eq!(body.children_named("B").count(), 2);
        assert_eq!(body.text_of("B"), "t & u");
        assert_eq!(body.child("B").and_then(|b| b.attr("c")), Some("1"));
        assert!(Element::parse("<a><b></a>").is_err());
    }
}
