// Keyboard shortcuts for the rating form: a radio's data-key selects it; [ and ] go to the
// previous / next item; Ctrl+Enter (or Cmd+Enter) submits. Keys typed into the comment box are left alone.
document.addEventListener("keydown", function (event) {
  var target = event.target;
  var typing = target && (target.tagName === "TEXTAREA" || (target.tagName === "INPUT" && target.type !== "radio" && target.type !== "checkbox"));
  var form = document.getElementById("rate");
  if ((event.ctrlKey || event.metaKey) && event.key === "Enter" && form) {
    event.preventDefault();
    form.requestSubmit ? form.requestSubmit() : form.submit();
    return;
  }
  if (typing || event.ctrlKey || event.metaKey || event.altKey) { return; }
  if (event.key === "[" || event.key === "]") {
    var link = document.getElementById(event.key === "[" ? "prev" : "next");
    if (link) { event.preventDefault(); window.location.href = link.href; }
    return;
  }
  var inputs = document.querySelectorAll("input[data-key]");
  for (var i = 0; i < inputs.length; i++) {
    if (inputs[i].dataset.key === event.key.toLowerCase() && !inputs[i].disabled) {
      event.preventDefault();
      inputs[i].checked = true;
      inputs[i].focus();
      return;
    }
  }
});
