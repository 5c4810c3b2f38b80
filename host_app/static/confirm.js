// Forms with data-confirm ask before they submit (the Content-Security-Policy allows no inline handlers).
document.addEventListener("submit", (event) => {
  const question = event.target.dataset ? event.target.dataset.confirm : undefined;
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});
